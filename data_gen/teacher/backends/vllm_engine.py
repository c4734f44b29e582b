"""The `vllm` backend: vLLM's offline engine on local GPUs (`pip install 'lsm[vllm]'`).

Thin by design (no GPU on the development machine; its tests skip without one). Written
against vLLM >= 0.11: `LLM.chat` with `SamplingParams(structured_outputs=
StructuredOutputsParams(json=schema))` for constrained answers, and `SamplingParams(
max_tokens=1, logprobs=k)` with `continue_final_message=True` to read next-token
log-probabilities for option scoring (the same greedy walk as the `openai` backend).
Tensor parallelism and `max_num_seqs` go to `LLM(...)`; data parallelism is
`data_parallel_size` (vLLM >= 0.9) or several `vllm serve` processes behind the `openai`
backend.
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np

from lsm.data_gen.teacher.backends.base import Conversation, Generation, LLMBackend


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
            enable_prefix_caching=config.enable_prefix_caching,
        )
        if config.max_model_len:
            kwargs["max_model_len"] = config.max_model_len
        if config.data_parallel_size > 1:
            kwargs["data_parallel_size"] = config.data_parallel_size
        self.llm = LLM(**kwargs)
        self.model_name = f"{config.model} (vLLM, tp={config.tensor_parallel_size}, dp={config.data_parallel_size})"

    def generate(self, conversations: Sequence[Conversation], schema: dict[str, Any] | None = None,
                 temperature: float = 0.7, seed: int = 0, max_tokens: int = 256) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = [SamplingParams(temperature=temperature, max_tokens=max_tokens, seed=seed + i,
                                 structured_outputs=StructuredOutputsParams(json=schema) if schema else None)
                  for i in range(len(conversations))]
        t0 = time.perf_counter()
        outs = self.llm.chat(list(conversations), params, use_tqdm=False)
        dt = (time.perf_counter() - t0) / max(len(conversations), 1)
        gens = []
        for o in outs:
            c = o.outputs[0]
            gens.append(Generation(text=c.text, prompt_tokens=len(o.prompt_token_ids or []), completion_tokens=len(c.token_ids),
                                   latency_s=dt, finish_reason=c.finish_reason or "stop"))
        return gens

    def _next(self, convs: list[Conversation], k: int = 20) -> list[dict[str, float]]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=k)
        outs = self.llm.chat(convs, params, use_tqdm=False, add_generation_prompt=False, continue_final_message=True)
        res = []
        for o in outs:
            lp = o.outputs[0].logprobs[0]  # {token_id: Logprob(logprob, rank, decoded_token)}
            res.append({v.decoded_token: float(v.logprob) for v in lp.values()})
        return res

    def score_options(self, conversations: Sequence[Conversation], option_labels: Sequence[Sequence[str]]) -> list[np.ndarray]:
        logps = [np.zeros(len(o)) for o in option_labels]
        # frontier entries: (conversation index, consumed text, option indices)
        frontier = [(i, "", list(range(len(o)))) for i, o in enumerate(option_labels)]
        while frontier:
            convs = [conversations[i][:-1] + [{"role": "assistant", "content": conversations[i][-1]["content"] + k}] for i, k, _ in frontier]
            tops = self._next(convs)
            nxt: dict[tuple[int, str], list[int]] = {}
            for (i, k, opts), top in zip(frontier, tops):
                floor = min(top.values()) - math.log(2)
                for o in opts:
                    rest = option_labels[i][o][len(k):]
                    match = max((t for t in top if t and rest.startswith(t)), key=len, default=None)
                    if match is None:
                        logps[i][o] += floor
                        continue
                    logps[i][o] += top[match]
                    if len(rest) > len(match):
                        nxt.setdefault((i, k + match), []).append(o)
            frontier = [(i, k, v) for (i, k), v in nxt.items()]
        out = []
        for lp in logps:
            e = np.exp(lp - lp.max())
            out.append(e / e.sum())
        return out

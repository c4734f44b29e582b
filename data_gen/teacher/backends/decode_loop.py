"""The embedded backend's decode loop: continuous batching with per-row sampling.

`model.generate` runs a batch until its longest answer ends: here answers of one chunk range
from ~45 to ~300 tokens, so a third of the rows' decode steps were spent on finished rows,
and a decode step costs ~55 ms however few rows it carries (reading the weights, 30 layers of
small operations) plus ~4 ms per row (docs/results.md#teacher-speed-change-by-change). This loop keeps up to
`batch_size` rows decoding: a finished row leaves the batch at once, and when `refill` slots
are free the next prompts are encoded (one prefill pass, from the shared prefix's keys and
values where there is one) and join it, their caches left padded to the batch's length. Keys
and values are appended in place (`GrowLayer`), not concatenated into a new cache each step.

Every row samples from its own generator, seeded by (seed, the row's index in the call), by
the inverse CDF (one uniform per row against the cumulative softmax of logits / temperature:
an exact draw). An answer therefore depends on its prompt, the seed and its index only — not
on the batch size, on `refill`, or on which rows it shared steps with — up to the float
rounding of differently shaped matrix products, which can flip a rare token (tested).

Shapes (one legend): B rows decoding, L cached columns (left padded), k prompts joining, W
their prompt width (the shared prefix's S, then each row's own tokens, left padded), V
vocabulary, H / Hkv query / key-value heads, d head width.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from lsm.society import seeds


@dataclass
class _Row:
    index: int
    """Position of the prompt in the call."""
    length: int
    """Tokens the row holds: its prompt and what it has generated (the next position id)."""
    gen: torch.Generator
    state: Any = None
    """The schema walker's row state (`constrained.TemplateWalker`), or None."""
    tokens: list[int] = field(default_factory=list)


@dataclass
class DecodeTimes:
    """Seconds per phase of `decode` calls, and the decode steps' work."""

    prefill: float = 0.0
    decode: float = 0.0
    constrained: float = 0.0
    steps: int = 0
    """Decode forward passes."""
    row_steps: int = 0
    """Rows carried by those passes, summed (row_steps / steps: the mean batch)."""


def row_generator(seed: int, index: int) -> torch.Generator:
    """The sampling generator of the row at `index` of a call with `seed` (one definition)."""
    return seeds.torch_generator(seed, seeds.Stream.LLM_ROW, index)


def _left_pad(t: torch.Tensor, L: int) -> torch.Tensor:
    """(b, Hkv, l, d) cache or (b, l) mask with zero columns added in front up to L."""
    extra = L - t.shape[-2 if t.dim() == 4 else -1]
    if extra <= 0:
        return t
    if t.dim() == 4:
        return torch.cat([t.new_zeros(t.shape[0], t.shape[1], extra, t.shape[3]), t], 2)
    return torch.cat([t.new_zeros(t.shape[0], extra), t], 1)


SPARE = 64
"""Free columns a batch's cache buffers are allocated with (they grow by half when full)."""


@functools.cache
def _grow_layer_class():
    """`GrowLayer`, defined once per process on first use (transformers is imported lazily)."""
    from transformers.cache_utils import DynamicLayer

    class GrowLayer(DynamicLayer):
        """A cache layer whose keys and values are views of buffers with spare columns: a decode
        step writes its one column in place. transformers' `DynamicLayer` concatenates the
        whole cache instead, a copy per step that took 42 % of a batch-32 decode step here
        (640 cached columns; `torch.profiler`)."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor):  # (B, Hkv, L, d) each
            super().__init__()
            B, H, L, d = keys.shape
            self.kbuf, self.vbuf = keys.new_empty(B, H, L + SPARE, d), values.new_empty(B, H, L + SPARE, d)
            self.kbuf[:, :, :L], self.vbuf[:, :, :L] = keys, values
            self.n, self.device, self.is_initialized = L, keys.device, True
            self.keys, self.values = self.kbuf[:, :, :L], self.vbuf[:, :, :L]

        def update(self, key_states, value_states, *args, **kwargs):  # (B, Hkv, q, d) each
            q = key_states.shape[-2]
            if self.n + q > self.kbuf.shape[2]:
                B, H, cap, d = self.kbuf.shape
                cap = max(self.n + q, cap + cap // 2)
                kbuf, vbuf = self.kbuf.new_empty(B, H, cap, d), self.vbuf.new_empty(B, H, cap, d)
                kbuf[:, :, : self.n], vbuf[:, :, : self.n] = self.keys, self.values
                self.kbuf, self.vbuf = kbuf, vbuf
            self.kbuf[:, :, self.n : self.n + q] = key_states
            self.vbuf[:, :, self.n : self.n + q] = value_states
            self.n += q
            self.keys, self.values = self.kbuf[:, :, : self.n], self.vbuf[:, :, : self.n]
            return self.keys, self.values

    return GrowLayer


class Batch:
    """The rows decoding and their cache: per layer keys and values (B, Hkv, L, d) in buffers
    with spare columns (`GrowLayer`), and the padding mask (B, L)."""

    def __init__(self) -> None:
        self.rows: list[_Row] = []
        self.layers: list = []
        self.mask = torch.zeros((0, 0), dtype=torch.long)
        self._layer = _grow_layer_class()

    def cache(self):
        """A transformers cache over the batch's layers (a forward pass appends to them in place)."""
        from transformers import DynamicCache

        cache = DynamicCache()
        cache.layers = self.layers
        return cache

    def join(self, rows: list[_Row], kv: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> None:
        if not self.rows:
            self.rows, self.mask = rows, mask
            self.layers = [self._layer(k, v) for k, v in kv]
            return
        L = max(self.mask.shape[1], mask.shape[1])
        self.layers = [self._layer(torch.cat([_left_pad(old.keys, L), _left_pad(k, L)]), torch.cat([_left_pad(old.values, L), _left_pad(v, L)]))
                       for old, (k, v) in zip(self.layers, kv)]
        self.mask = torch.cat([_left_pad(self.mask, L), _left_pad(mask, L)])
        self.rows = self.rows + rows

    def keep(self, keep: list[int]) -> None:
        """Keep these rows (indices into `rows`) and drop the columns no kept row uses."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.layers, self.mask = [], torch.zeros((0, 0), dtype=torch.long)
            return
        sel = torch.tensor(keep, dtype=torch.long)
        mask = self.mask[sel]
        first = int(mask.any(0).long().argmax())  # leading columns that are padding in every kept row
        self.mask = mask[:, first:]
        self.layers = [self._layer(layer.keys[sel, :, first:], layer.values[sel, :, first:]) for layer in self.layers]


def decode(model, prompts: Sequence[list[int]], *, batch_size: int, refill: int, seed: int, temperature: float,
           max_tokens: int, eos_id: int, pad_id: int, walker=None,
           prefix_for: Callable[[Sequence[list[int]]], tuple[tuple[int, ...], Any]] = lambda batch: ((), None),
           on_prompts: Callable[[Sequence[list[int]], int, int, Any], None] | None = None,
           times: DecodeTimes | None = None) -> list[tuple[list[int], str]]:
    """(generated tokens up to and including EOS, "stop" or "length") per prompt, in order.

    `walker` (`constrained.TemplateWalker`) masks what the schema does not allow; `prefix_for`
    gives a joining group's shared prefix and its cache (`EmbeddedBackend._prefix_for`);
    `on_prompts(group, S, W, cache)` sees each group's prompt cache (the prompt cache for scoring).
    """
    from transformers import DynamicCache

    times = times if times is not None else DecodeTimes()
    out: list[tuple[list[int], str]] = [([], "")] * len(prompts)
    batch = Batch()
    nxt = 0  # the next prompt to join
    last: torch.Tensor | None = None  # (B, V) float32 logits of each row's next token

    def admit() -> None:
        nonlocal nxt, last
        group = list(prompts[nxt : nxt + batch_size - len(batch.rows)])
        t0 = time.perf_counter()
        prefix, past = prefix_for(group)  # S shared tokens and their cache, or ((), None)
        S = len(prefix)
        rest = [list(p[S:]) for p in group]
        W = S + max(len(r) for r in rest)
        ids = torch.tensor([[pad_id] * (W - S - len(r)) + r for r in rest], dtype=torch.long)  # (k, W - S)
        mask = torch.tensor([[1] * S + [0] * (W - S - len(r)) + [1] * len(r) for r in rest], dtype=torch.long)  # (k, W)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, S:]  # (k, W - S) each token's position in its own prompt
        with torch.inference_mode():
            res = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=past if past is not None else DynamicCache(),
                        use_cache=True, logits_to_keep=1)
        if on_prompts is not None:
            on_prompts(group, S, W, res.cache)
        rows = [_Row(nxt + i, len(p), row_generator(seed, nxt + i), walker.start() if walker is not None else None)
                for i, p in enumerate(group)]
        batch.join(rows, [(layer.keys, layer.values) for layer in res.cache.layers], mask)
        logits = res.logits[:, -1].float()  # (k, V)
        last = logits if last is None else torch.cat([last, logits])
        nxt += len(group)
        times.prefill += time.perf_counter() - t0

    while nxt < len(prompts) or batch.rows:
        free = batch_size - len(batch.rows)
        if nxt < len(prompts) and (not batch.rows or free >= min(refill, len(prompts) - nxt)):
            admit()
            continue
        assert last is not None
        t0, c0 = time.perf_counter(), times.constrained
        if walker is not None:
            t1 = time.perf_counter()
            allowed = walker.allowed([r.state for r in batch.rows], last.shape[-1])  # (B, V) bool
            last = last.masked_fill(~allowed, float("-inf"))
            times.constrained += time.perf_counter() - t1
        if temperature > 0:  # inverse CDF: one uniform per row picks from the row's softmax
            u = torch.cat([torch.rand(1, generator=r.gen, dtype=torch.float64) for r in batch.rows])  # (B,) [0, 1)
            cdf = torch.softmax(last / temperature, -1, dtype=torch.float64).cumsum(-1)  # (B, V)
            # the first token whose cumulative probability exceeds u: never one of probability 0
            picked = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(1).clamp(max=last.shape[-1] - 1)  # (B,)
        else:
            picked = last.argmax(-1)
        keep = []
        for b, (r, tok) in enumerate(zip(batch.rows, picked.tolist())):
            r.tokens.append(tok)
            r.length += 1
            if walker is not None:
                t1 = time.perf_counter()
                walker.advance(r.state, tok)
                times.constrained += time.perf_counter() - t1
            if tok == eos_id or len(r.tokens) >= max_tokens:
                out[r.index] = (r.tokens, "stop" if tok == eos_id else "length")
            else:
                keep.append(b)
        batch.keep(keep)
        if not batch.rows:
            last = None
            times.decode += time.perf_counter() - t0 - (times.constrained - c0)
            continue
        sel = torch.tensor(keep, dtype=torch.long)
        ids = picked[sel][:, None]  # (B, 1)
        pos = torch.tensor([[r.length - 1] for r in batch.rows], dtype=torch.long)  # (B, 1)
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(keep), 1)], 1)  # (B, L + 1)
        times.steps, times.row_steps = times.steps + 1, times.row_steps + len(keep)
        with torch.inference_mode():
            res = model(input_ids=ids, attention_mask=batch.mask, position_ids=pos, cache=batch.cache(), use_cache=True)
        last = res.logits[:, -1].float()
        times.decode += time.perf_counter() - t0 - (times.constrained - c0)
    return out

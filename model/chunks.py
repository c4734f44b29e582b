"""How many agents one forward pass takes, by device: the chunk sizes rollouts and `lsm bench`
share (`SocietyModel.forward_in_chunks` and the attention's own receiver chunks). The result of a
tick does not depend on them; memory and speed do.
"""
from __future__ import annotations

import torch


FORWARD_CHUNK_CPU = 1 << 14
"""Agents per forward pass on a CPU (`SocietyModel.forward_in_chunks`), chosen by measurement:
10^6 agents, 3 ticks, this machine: 2^12 66 s, 2^14 56 s, 2^16 63 s, one pass 145 s (and 8.2
GiB peak against 6.7); at 10^5 chunks of 2^14 match one pass (5.7 s against 5.9 s)."""


def forward_chunk(device: str | torch.device) -> int:
    """Agents per forward pass by default: `FORWARD_CHUNK_CPU` on a CPU, all at once on a GPU
    (which wants large batches; the attention is chunked by `auto_chunk` there)."""
    return FORWARD_CHUNK_CPU if torch.device(device).type == "cpu" else 0


def auto_chunk(n: int) -> int:
    """Receivers per attention chunk: everything up to 2^17 agents, chunks of 2^17 beyond."""
    return 0 if n <= 131_072 else 131_072

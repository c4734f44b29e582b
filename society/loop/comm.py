"""The collectives of a sharded run, on numpy arrays: torch.distributed underneath (gloo on CPUs).

Every rank holds the rows of its own agents (`Partition.members(rank)`, ascending ids). Arrays
travel as raw bytes (any dtype, bool included) through `all_gather` and `all_to_all`; the sizes
an all-to-all receives are known beforehand (`exchange_counts` sends them).

Notation: N agents | N_r agents of rank r | P ranks.
"""
from __future__ import annotations

import numpy as np

from lsm.society.world.partition import Partition


def _bytes(a: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a).view(np.uint8).reshape(-1))


class Comm:
    """One rank's view of the process group (initialised by the launcher, `infer.launch`)."""

    def __init__(self, part: Partition):
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        if part.shards != self.size:
            raise ValueError(f"a partition into {part.shards} shards run on {self.size} ranks")
        self.part = part
        self.members = [part.members(r) for r in range(self.size)]  # P x (N_r,)
        self.mine = self.members[self.rank]
        self.sent_bytes = 0
        """Bytes this rank sent to others in `exchange` (the halo), since it was last reset."""

    def gather_rows(self, local: np.ndarray) -> np.ndarray:
        """(N, ...) every rank's rows (N_r, ...) put at its agents' ids."""
        import torch

        shape, dtype = local.shape[1:], local.dtype
        row = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        most = max(len(m) for m in self.members)
        send = torch.zeros(most * row, dtype=torch.uint8)
        send[:len(local) * row] = _bytes(local)
        parts = [torch.empty(most * row, dtype=torch.uint8) for _ in range(self.size)]
        self.dist.all_gather(parts, send)
        out = np.empty((self.part.owner.shape[0], *shape), dtype=dtype)
        for r, m in enumerate(self.members):
            out[m] = parts[r][:len(m) * row].numpy().view(dtype).reshape(len(m), *shape)
        return out

    def exchange(self, send: list[np.ndarray], recv_rows: list[int]) -> list[np.ndarray]:
        """All-to-all: `send[q]` (rows, ...) goes to rank q; returns what each rank sent here,
        `recv_rows[q]` rows from rank q (same trailing shape and dtype as `send`)."""
        import torch

        shape, dtype = send[0].shape[1:], send[0].dtype
        row = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        inputs = torch.cat([_bytes(s) if len(s) else torch.empty(0, dtype=torch.uint8) for s in send])
        out_sizes, in_sizes = [k * row for k in recv_rows], [len(s) * row for s in send]
        output = torch.empty(sum(out_sizes), dtype=torch.uint8)
        self.sent_bytes += sum(b for q, b in enumerate(in_sizes) if q != self.rank)
        self.dist.all_to_all_single(output, inputs, out_sizes, in_sizes)
        parts = output.split(out_sizes)
        return [o.numpy().view(dtype).reshape(k, *shape) for o, k in zip(parts, recv_rows)]

    def exchange_counts(self, counts: list[int]) -> list[int]:
        """All-to-all of one number per rank: `counts[q]` goes to rank q; returns what each sent here."""
        import torch

        out = torch.empty(self.size, dtype=torch.int64)
        self.dist.all_to_all_single(out, torch.tensor(counts, dtype=torch.int64))
        return out.tolist()

    def min(self, value: int) -> int:
        """The smallest `value` over the ranks."""
        import torch

        t = torch.tensor([value], dtype=torch.int64)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MIN)
        return int(t.item())

    def sum(self, value: float) -> float:
        import torch

        t = torch.tensor([value], dtype=torch.float64)
        self.dist.all_reduce(t)
        return float(t.item())

    def barrier(self) -> None:
        self.dist.barrier()

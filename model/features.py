"""The student's input features, built the same way for training episodes and rollouts.

Action texts and their embeddings, event features (category codes, `EVENT_FEATURES`, text
embedding), and the type of the tie behind every shown neighbour. `train/` builds episodes with
these and `infer/` builds rollout inputs with them, so the student sees the same features in both.

Notation: N agents | K shown | A actions | Ev events | T text-embedding width.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lsm.society.embed import TEXT_DIM, shared_encoder
from lsm.society.loop.neighbors import EdgeTyper
from lsm.society.scenario import EVENT_FEATURES, EVENT_VOCABS, Scenario


def action_texts(sc: Scenario) -> list[str]:
    a = sc.actions
    if a.type == "categorical":
        return [f"{o.name}: {o.description}" if o.description else o.name for o in a.options]  # type: ignore[union-attr]
    return [f"pick a number from {lo} to {hi}" for lo, hi in (lab.split("-") for lab in a.labels)]


def context_text(sc: Scenario) -> str:
    """What the student reads of the scenario itself: its context and question (the teacher reads
    both in every prompt), embedded as one sentence embedding (`TickInputs.context_emb`)."""
    return f"{sc.context.strip()} {sc.question.strip()}"


def embed_texts(texts: tuple[str, ...]) -> Tensor:
    """(len(texts), T) float32 sentence embeddings (the float16 values traces store)."""
    return torch.from_numpy(shared_encoder().encode(list(texts)).astype(np.float32))


def typed_edges(shown: np.ndarray, graph, typer: EdgeTyper | None = None) -> tuple[Tensor, Tensor]:
    """Edges j -> i for every shown neighbour j of i, typed by the graph's closest tie (min type)."""
    typer = typer or EdgeTyper(graph)
    i, k = np.nonzero(shown >= 0)
    j = shown[i, k].astype(np.int64)
    return torch.from_numpy(np.stack([j, i])), torch.from_numpy(typer(j, i))


def event_tensors(rows: list[dict], encode, stored: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Event rows (the `events/` columns: source_type, channel, framing, the `EVENT_FEATURES`,
    text) -> (Ev, 3) category codes, (Ev, F) numeric features in `EVENT_FEATURES` order, (Ev, T) embeddings of the
    event *text* (what the teacher stores in `events/text_emb`; `stored` when the file has them).
    Training and rollouts both build their event inputs here, so they see the same features."""
    cat = torch.tensor([[EVENT_VOCABS[0].index(r["source_type"]), EVENT_VOCABS[1].index(r["channel"]),
                         EVENT_VOCABS[2].index(r["framing"])] for r in rows], dtype=torch.long).reshape(-1, 3)
    num = torch.tensor([[float(r[k]) for k in EVENT_FEATURES] for r in rows], dtype=torch.float32).reshape(-1, len(EVENT_FEATURES))
    if stored is not None:
        emb = stored
    else:
        emb = encode(tuple(r["text"] for r in rows)) if rows else torch.zeros(0, TEXT_DIM)
    return cat, num, emb

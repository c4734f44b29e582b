"""Features labelled in the teacher's reasoning texts, by documented keyword rules.

A reasoning text carries a feature when it matches the feature's regular expression (case
insensitive, word starts). The rules are deliberately plain so a reader can audit them:

| feature | matches (word starts) |
|---|---|
| `mentions_trust` | trust, reliab, credib, believ, honest, official |
| `mentions_cost` | cost, price, money, afford, expens, pay, fee, cheap, budget |
| `mentions_risk` | risk, fear, afraid, danger, worr, scar, side effect, safe, harm, unsafe |
| `mentions_others` | whole words: other(s), neighbo(u)r(s), friend(s), family/families, everyone, everybody, people, community, peer(s), they |
"""
from __future__ import annotations

import re

import numpy as np

TEXT_FEATURES: dict[str, str] = {
    "mentions_trust": r"\b(trust|reliab|credib|believ|honest|official)",
    "mentions_cost": r"\b(cost|price|money|afford|expens|pay|fee|cheap|budget)",
    "mentions_risk": r"\b(risk|fear|afraid|danger|worr|scar|side effect|safe|harm|unsafe)",
    "mentions_others": r"\b(others?|neighbou?rs?|friends?|family|families|everyone|everybody|people|community|peers?|they)\b",
}


def label_texts(texts: np.ndarray) -> dict[str, np.ndarray]:
    """{feature: bool array of the texts' shape}; empty texts are False."""
    flat = np.asarray(texts, dtype=object).ravel()
    out = {}
    for name, pattern in TEXT_FEATURES.items():
        rx = re.compile(pattern, re.IGNORECASE)
        out[name] = np.array([bool(t) and bool(rx.search(str(t))) for t in flat]).reshape(np.shape(texts))
    return out

from __future__ import annotations

import numpy as np
import pytest

from lsm.society.embed import TEXT_DIM, SentenceEncoder


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder(batch_size=4)


def test_embeddings_are_unit_norm_float16_and_order_preserving(encoder):
    texts = ["I will get vaccinated this week.", "short", "", "The government cannot be trusted on vaccines at all."]
    emb = encoder.encode(texts)
    assert emb.shape == (4, TEXT_DIM) and emb.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1.0, atol=2e-3)
    single = encoder.encode([texts[3]])
    np.testing.assert_allclose(single[0].astype(np.float32), emb[3].astype(np.float32), atol=2e-3)


def test_meaning_drives_similarity(encoder):
    a, b, c = encoder.encode([
        "I am getting the vaccine to protect my family.",
        "I'll take the shot so my kids stay safe.",
        "The new payment app gives a five percent discount at shops.",
    ]).astype(np.float32)
    assert a @ b > a @ c + 0.2

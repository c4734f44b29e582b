from __future__ import annotations

import numpy as np
import pytest
import torch

from lsm.config import ConfigError, from_dict, shipped
from lsm.society.world.anes96 import load_anes96
from lsm.society.world.population import (IdentityVocab, PopulationConfig, encode_identity, load_population_config,
                                     sample_population)


def test_same_seed_same_population_and_different_seed_differs():
    cfg = load_population_config(shipped("population", "generic.yaml"))
    a, b, c = (sample_population(cfg, 500, s) for s in (7, 7, 8))
    for attr in a.categorical:
        np.testing.assert_array_equal(a.categorical[attr], b.categorical[attr])
    assert a.persona == b.persona
    assert any((a.categorical[x] != c.categorical[x]).any() for x in a.categorical)


def test_anes_resampling_keeps_survey_marginals():
    """Resampled shares stay within 5 standard errors of the 944-respondent survey's shares."""
    n = 20000
    pop = sample_population(load_population_config(shipped("population", "anes96.yaml")), n, seed=3)
    survey = load_anes96()
    for attr, col, offset in (("party_id", "PID", 0), ("ideology", "selfLR", 1), ("education", "educ", 1)):
        expected = np.bincount(survey[col].astype(int) - offset, minlength=7) / len(survey)
        got = np.bincount(pop.categorical[attr], minlength=7) / n
        se = np.sqrt(expected * (1 - expected) / n)
        assert np.all(np.abs(got - expected) <= 5 * se + 1e-9), (attr, got, expected)
    assert abs(pop.numeric["age"].mean() - survey["age"].mean()) < 5 * survey["age"].std() / np.sqrt(n)
    assert abs(pop.numeric["tv_news_days"].mean() - survey["TVnews"].mean()) < 5 * survey["TVnews"].std() / np.sqrt(n)
    # Readable values, not codes.
    assert set(pop.categories["vote_1996"]) == {"clinton", "dole"}
    assert pop.numeric["income"].min() >= 0 and pop.numeric["income"].max() <= 150000


def test_copula_correlation_and_conditionals_hold():
    pop = sample_population(load_population_config(shipped("population", "anes96.yaml")), 20000, seed=0)
    ideology = pop.categorical["ideology"].astype(float)
    assert np.corrcoef(ideology, pop.numeric["openness"])[0, 1] < -0.15  # configured rho = -0.25
    # occupation | education: nobody with a PhD is a manual worker (table gives 0).
    phd = pop.categorical["education"] == pop.categories["education"].index("phd")
    manual = pop.categorical["occupation"] == pop.categories["occupation"].index("manual_worker")
    assert phd.any() and not (phd & manual).any()


def test_marginals_are_respected():
    cfg = load_population_config(shipped("population", "generic.yaml"))
    pop = sample_population(cfg, 20000, seed=0)
    want = cfg.attributes["region"].proportions / cfg.attributes["region"].proportions.sum()
    got = np.bincount(pop.categorical["region"], minlength=4) / pop.n
    np.testing.assert_allclose(got, want, atol=0.02)
    age = pop.numeric["age"]
    assert age.min() >= 18 and age.max() <= 90 and np.all(age == np.round(age))


def test_identity_encoding_and_vocabulary():
    pop = sample_population(load_population_config(shipped("population", "generic.yaml")), 100, seed=0)
    codes, numeric = encode_identity(pop)
    vocab = IdentityVocab.of(pop)
    assert codes.shape == (100, len(vocab.categorical)) and codes.dtype == torch.long
    assert numeric.shape == (100, len(vocab.numeric)) and 0 <= numeric.min() and numeric.max() <= 1
    for k, card in enumerate(vocab.cardinalities):
        assert codes[:, k].max() < card
    assert IdentityVocab.from_dict(vocab.to_dict()) == vocab
    # Re-encoding with a vocabulary whose category order differs maps by name.
    reordered = IdentityVocab([(a, list(reversed(c))) for a, c in vocab.categorical], vocab.numeric)
    codes2, _ = encode_identity(pop, reordered)
    k = [a for a, _ in vocab.categorical].index("region")
    assert reordered.categorical[k][1][codes2[0, k]] == pop.labels("region")[0]


def test_persona_mentions_identity():
    pop = sample_population(load_population_config(shipped("population", "anes96.yaml")), 50, seed=0)
    rec = pop.record(0)
    text = pop.persona[0]
    assert text.startswith(rec["name"]) and f"aged {int(rec['age'])}" in text
    assert rec["ideology"].replace("_", " ") in text


@pytest.mark.parametrize("data, needle", [
    ({"name": "x", "attributes": {"a": {"type": "numeric", "dist": "normal", "min": 0, "max": 1, "mean": 0.5}}}, "attributes.a.std"),
    ({"name": "x", "attributes": {"a": {"type": "categorical", "categories": {"u": -1, "v": 2}}}}, "attributes.a.categories.u"),
    ({"name": "x", "attributes": {"a": {"type": "numeric", "dist": "uniform", "min": 0, "max": 1}},
      "correlations": [{"between": ["a", "zz"], "rho": 0.2}]}, "correlations[0].between"),
    ({"name": "x", "attributes": {"a": {"type": "categorical", "categories": ["u"], "given": "b",
      "table": {"k": {"u": 1}}}}}, "attributes.a.given"),
])
def test_malformed_population_names_the_field(data, needle):
    with pytest.raises(ConfigError) as err:
        from_dict(PopulationConfig, data, source="pop.yaml")
    assert needle in str(err.value) and "pop.yaml" in str(err.value)


def test_impossible_correlations_are_rejected():
    attrs = {k: {"type": "numeric", "dist": "uniform", "min": 0, "max": 1} for k in "abc"}
    corr = [{"between": ["a", "b"], "rho": 0.9}, {"between": ["b", "c"], "rho": 0.9}, {"between": ["a", "c"], "rho": -0.9}]
    cfg = from_dict(PopulationConfig, {"name": "x", "attributes": attrs, "correlations": corr})
    with pytest.raises(ConfigError, match="positive definite"):
        sample_population(cfg, 10, 0)


@pytest.mark.parametrize("n", [1, 3, 7])
@pytest.mark.parametrize("name", ["anes96", "generic"])
def test_tiny_worlds_build(name, n):
    from lsm.society.world import build_world

    w = build_world(shipped("population", f"{name}.yaml"), shipped("graph", "default.yaml"), agents=n, seed=0)
    assert w.n == n and len(w.population.persona) == n
    assert (w.graph.edge_index < n).all()

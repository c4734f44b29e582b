from __future__ import annotations

import numpy as np
import pytest

from lsm.config import ConfigError, from_dict, shipped
from lsm.society.world.graph import (EDGE_TYPES, FRIEND, HOUSEHOLD, MEDIA, PROFESSIONAL, WEAK_TIE, GraphConfig, build_graph,
                                homophily_stats, load_graph_config)


def test_no_self_loops_no_duplicates_and_csr_order(anes_world):
    g = anes_world.graph
    src, dst = g.edge_index.astype(np.int64)
    assert not (src == dst).any()
    key = (dst * len(EDGE_TYPES) + g.edge_type) * g.n + src
    assert (np.diff(key) > 0).all()  # strictly increasing: sorted by receiver and unique per type
    assert src.min() >= 0 and max(src.max(), dst.max()) < g.n
    assert g.edge_weight.shape == g.edge_type.shape == (g.num_edges,)


def test_same_seed_same_graph(anes_world):
    again = build_graph(anes_world.graph_config, anes_world.population, seed=anes_world.seed)
    np.testing.assert_array_equal(again.edge_index, anes_world.graph.edge_index)
    np.testing.assert_array_equal(again.edge_type, anes_world.graph.edge_type)
    other = build_graph(anes_world.graph_config, anes_world.population, seed=anes_world.seed + 1)
    assert other.num_edges != again.num_edges or (other.edge_index != again.edge_index).any()


def test_undirected_types_are_symmetric(anes_world):
    g = anes_world.graph
    for t in (HOUSEHOLD, FRIEND, PROFESSIONAL, WEAK_TIE):
        sel = g.edge_type == t
        fwd = set(zip(g.edge_index[0][sel].tolist(), g.edge_index[1][sel].tolist()))
        assert fwd == {(b, a) for a, b in fwd}, EDGE_TYPES[t]


def test_degrees_within_configured_ranges(anes_world):
    g, cfg = anes_world.graph, anes_world.graph_config
    hh_sizes = np.bincount(g.household)
    assert hh_sizes.min() >= 1 and hh_sizes.max() <= 6
    assert g.in_degree(HOUSEHOLD).max() <= 5
    # Every household member is linked to every other member.
    np.testing.assert_array_equal(g.in_degree(HOUSEHOLD), hh_sizes[g.household] - 1)
    friend = g.in_degree(FRIEND).mean()
    assert 0.75 * cfg.friend.mean_degree <= friend <= 1.1 * cfg.friend.mean_degree
    eligible = ~np.isin(anes_world.population.labels("occupation"), cfg.professional.exclude["occupation"])
    prof = g.in_degree(PROFESSIONAL)
    assert prof[~eligible].sum() == 0
    assert 0.75 * cfg.professional.mean_degree <= prof[eligible].mean() <= 1.1 * cfg.professional.mean_degree
    weak = g.in_degree(WEAK_TIE)
    assert 0.75 * cfg.weak_tie.mean_degree <= weak.mean() <= 1.1 * cfg.weak_tie.mean_degree
    assert weak.max() > 10 * weak.mean()  # heavy tail
    # Media edges run from opinion leaders to followers.
    media_senders = np.unique(g.edge_index[0][g.edge_type == MEDIA])
    assert np.isin(media_senders, g.leaders).all()
    total = g.in_degree().mean()
    assert 10 <= total <= 40  # "tens of friends/colleagues", ~20 in all by default


def test_homophily_is_measurable(anes_world):
    stats = homophily_stats(anes_world.graph, anes_world.population, ["party", "occupation", "region", "age"])
    assert stats["party"]["friend"] > 1.1 and stats["party"]["media"] > 1.3
    assert stats["occupation"]["professional"] > 2.0
    assert stats["region"]["household"] > 2.0
    assert stats["age"]["household"] > 0.2


def test_no_homophily_when_switched_off(anes_world):
    cfg = from_dict(GraphConfig, {"name": "flat", "friend": {"mean_degree": 8}, "professional": {"mean_degree": 0},
                                  "weak_tie": {"mean_degree": 0.0}, "media": {"leader_share": 0}})
    g = build_graph(cfg, anes_world.population, seed=0)
    stats = homophily_stats(g, anes_world.population, ["party"])
    assert abs(stats["party"]["friend"] - 1.0) < 0.1


def test_outlet_audiences_follow_their_propensity(anes_world):
    g, pop = anes_world.graph, anes_world.population
    rep = pop.labels("party") == "republican"
    follows = g.followers_of("conservative_talk")
    assert follows[rep].mean() > 3 * follows[~rep].mean()


def test_unknown_attribute_in_graph_config_is_a_clear_error(anes_world):
    cfg = from_dict(GraphConfig, {"name": "bad", "friend": {"mean_degree": 4, "homophily": {"shoe_size": 0.5}}})
    with pytest.raises(ConfigError, match=r"friend\.homophily\.shoe_size.*an attribute of the population"):
        build_graph(cfg, anes_world.population, seed=0, source="bad.yaml")


def test_graph_config_validation():
    with pytest.raises(ConfigError, match="household.size_distribution.9"):
        from_dict(GraphConfig, {"name": "x", "household": {"size_distribution": {9: 1.0}}})
    with pytest.raises(ConfigError, match="weak_tie.exponent"):
        from_dict(GraphConfig, {"name": "x", "weak_tie": {"exponent": 1.5}})
    load_graph_config(shipped("graph", "default.yaml"))

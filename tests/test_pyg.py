"""`World.to_pyg()`: the world as a PyG `HeteroData`, and PyG layers reading it the right way round."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.nn import HeteroConv, SAGEConv, SimpleConv
from torch_geometric.utils import degree

from lsm.config import shipped
from lsm.society.world import build_world
from lsm.society.world.graph import EDGE_TYPES


@pytest.fixture(scope="module")
def world():
    return build_world(shipped("population", "generic.yaml"), shipped("graph", "default.yaml"), agents=300, seed=2)


def test_one_edge_type_per_tie_with_the_graphs_edges_in_stored_order(world):
    data, g = world.to_pyg(), world.graph
    assert data.node_types == ["agent"] and data["agent"].num_nodes == world.n
    assert data.edge_types == [("agent", t, "agent") for t in EDGE_TYPES]
    counts = np.bincount(g.edge_type, minlength=len(EDGE_TYPES))
    assert sum(data[et].num_edges for et in data.edge_types) == g.num_edges
    for code, t in enumerate(EDGE_TYPES):
        store = data["agent", t, "agent"]
        assert store.num_edges == counts[code]
        assert store.edge_index.dtype == torch.long and store.edge_weight.dtype == torch.float32
        m = g.edge_type == code
        np.testing.assert_array_equal(store.edge_index.numpy(), g.edge_index[:, m])  # row 0 sender, row 1 receiver
        np.testing.assert_array_equal(store.edge_weight.numpy(), g.edge_weight[m])
    assert counts.min() > 0  # every tie type is present, so each check above ran on real edges


def test_agent_features_are_the_codes_and_values_by_name(world):
    data, pop = world.to_pyg(), world.population
    agent = data["agent"]
    assert agent.x_names == list(pop.categorical) + list(pop.numeric)
    assert agent.x.shape == (world.n, len(agent.x_names)) and agent.x.dtype == torch.float32
    for k, a in enumerate(agent.x_names):
        expected = pop.categorical[a] if a in pop.categorical else pop.numeric[a]
        np.testing.assert_allclose(agent.x[:, k].numpy(), expected.astype(np.float32))
    for k, a in enumerate(pop.categorical):
        np.testing.assert_array_equal(agent.x_cat[:, k].numpy(), pop.categorical[a])
        assert agent.categories[a] == pop.categories[a]


def test_pyg_layers_aggregate_into_the_receiver(world):
    data, g = world.to_pyg(), world.graph
    for code, t in enumerate(EDGE_TYPES):
        ei = data["agent", t, "agent"].edge_index
        # PyG's default flow sends row 0 -> row 1: a sum of ones over in-edges is the in-degree
        ones = torch.ones(world.n, 1)
        np.testing.assert_array_equal(SimpleConv(aggr="sum")(ones, ei)[:, 0].numpy(), g.in_degree(code))
        np.testing.assert_array_equal(degree(ei[1], world.n).numpy(), g.in_degree(code))
        # the edge weights travel with the edges: weighted in-degree
        w = SimpleConv(aggr="sum", combine_root=None)(ones, ei, edge_weight=data["agent", t, "agent"].edge_weight)
        expected = np.bincount(g.edge_index[1][g.edge_type == code], weights=g.edge_weight[g.edge_type == code], minlength=world.n)
        np.testing.assert_allclose(w[:, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    # a heterogeneous model of stock PyG layers (no torch-sparse / pyg-lib needed) runs and trains
    torch.manual_seed(0)
    f = data["agent"].x.shape[1]
    conv = HeteroConv({et: SAGEConv(f, 8) for et in data.edge_types}, aggr="sum")
    out = conv(data.x_dict, data.edge_index_dict)
    assert out["agent"].shape == (world.n, 8) and torch.isfinite(out["agent"]).all()
    out["agent"].pow(2).mean().backward()
    assert all(p.grad is not None for p in conv.parameters())

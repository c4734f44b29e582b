"""Paired contrasts: one definition of each edit, read by the teacher and the student, and the
student's paired loss (`DistillModule.contrast_loss`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lsm.model.society import SocietyModel, StudentConfig
from lsm.model.tick import advance, trace_senders
from lsm.society.contrasts import CONTRASTS, keeps_events, kept_messages, removed_tie
from lsm.society.world.graph import EDGE_TYPES
from lsm.train.datamodule import TraceDataModule
from lsm.train.module import DistillModule
from lsm.train.replay import trace_inputs

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "data_gen/corpus/n20/vaccine_campaign_s0.h5")


def test_each_contrast_removes_what_its_name_says():
    ties = np.array([0, 1, 3, 3, 4])  # household, friend, weak tie x2, media
    assert CONTRASTS[0] == "shown" and kept_messages("shown", ties).all() and keeps_events("shown")
    assert not kept_messages("no_messages", ties).any() and keeps_events("no_messages")
    assert kept_messages("no_weak_tie", ties).tolist() == [True, True, False, False, True]
    assert kept_messages("no_household", torch.tensor(ties)).tolist() == [False, True, True, True, True]  # tensors too
    assert kept_messages("no_events", ties).all() and not keeps_events("no_events")
    assert [removed_tie(f"no_{t}") for t in EDGE_TYPES] == list(range(len(EDGE_TYPES)))
    with pytest.raises(ValueError, match="unknown contrast 'no_cousins'"):
        kept_messages("no_cousins", ties)


@pytest.fixture(scope="module")
def setting():
    dm = TraceDataModule([TRAIN])
    dm.setup()
    ep = dm.train_episodes[0]
    torch.manual_seed(0)
    m = DistillModule(StudentConfig(dim=32, heads=2, layers=1, expression_noise=0.0, categorical_sizes=dm.categorical_sizes,
                                    numeric_dim=dm.numeric_dim, channels=dm.channels))
    m.model.eval()
    return m, ep


def _student_changes(model: SocietyModel, ep, t: int, agents: list[int]) -> dict[str, torch.Tensor]:
    """The student's change of decision distribution under each contrast, built by hand: the
    neighbour table's entries of the removed tie types set to -1, or the agents' exposures dropped."""
    state = model.initial_state(ep.n, ep.action_emb.shape[0])
    inp, heard = trace_inputs(model, ep, t), trace_senders(model, ep.targets, t)
    with torch.no_grad():
        base = torch.softmax(advance(model, state, inp, senders=heard)[1].decision_logits, -1)
        out = {}
        for name in CONTRASTS[1:]:
            nb = inp.neighbors.clone()
            code = {"no_messages": -1, **{f"no_{e}": k for k, e in enumerate(EDGE_TYPES)}}.get(name)
            if code == -1:
                nb[:] = -1
            elif code is not None:
                nb[inp.neighbor_type == code] = -1
            exposure = inp.exposure
            if name == "no_events":
                exposure = exposure[:, ~torch.isin(exposure[0], torch.tensor(agents))]
            from dataclasses import replace

            edited = replace(inp, neighbors=nb, exposure=exposure)
            out[name] = torch.softmax(advance(model, state, edited, senders=heard)[1].decision_logits, -1) - base
    return out


def test_paired_loss_is_zero_when_the_student_changes_as_the_teacher_and_not_otherwise(setting):
    m, ep = setting
    t = 3
    shown = (ep.shown[t] >= 0).sum(1)
    agents = [int(i) for i in torch.nonzero(shown > 0).squeeze(1)[:6]]
    assert agents and ep.targets["valid"][t, agents].all()
    d = _student_changes(m.model, ep, t, agents)
    assert max(float(d[n][agents].abs().max()) for n in ("no_messages", "no_events")) > 1e-4  # the edits do something
    N, A = ep.targets["decision_dist"].shape[1:]
    q = torch.full((ep.ticks, N, len(CONTRASTS), A), float("nan"))
    q[t, agents, 0] = 1.0 / A  # any reference: only the teacher's change counts
    for x, name in enumerate(CONTRASTS[1:], start=1):
        q[t, agents, x] = q[t, agents, 0] + d[name][agents]
    targets = {**ep.targets, "contrast_dist": q}
    state = m.model.initial_state(ep.n, ep.action_emb.shape[0])
    inp, heard = trace_inputs(m.model, ep, t), trace_senders(m.model, ep.targets, t)
    with torch.no_grad():
        out = advance(m.model, state, inp, senders=heard)[1]
        agree = m.contrast_loss(state, inp, out, targets, t, heard, None, None)
        q[t, agents[0], 1] += torch.tensor([0.1, -0.1] + [0.0] * (A - 2))  # the teacher moves differently for one agent
        differ = m.contrast_loss(state, inp, out, {**targets, "contrast_dist": q}, t, heard, None, None)
        none = m.contrast_loss(state, inp, out, {**targets, "contrast_dist": torch.full_like(q, float("nan"))}, t, heard, None, None)
    assert float(agree) < 1e-10
    assert float(differ) > 1e-4
    assert float(none) == 0.0


def test_a_trace_without_contrasts_trains_and_one_with_them_adds_the_term(setting):
    m, ep = setting
    m.model.train()
    plain = m.unroll(ep, False)
    assert "contrast" not in plain and torch.isfinite(plain["loss"])
    q = torch.full((ep.ticks, ep.n, len(CONTRASTS), ep.targets["decision_dist"].shape[2]), float("nan"))
    q[2:, :5] = ep.targets["decision_dist"][2:, :5, None]  # the teacher did not change: the student should not either
    q[2:, :5, 1] = torch.roll(q[2:, :5, 1], 1, -1)  # except without messages
    ep2 = type(ep)(**{**ep.__dict__, "targets": {**ep.targets, "contrast_dist": q}})
    with_c = m.unroll(ep2, False)
    assert float(with_c["contrast"]) > 0 and torch.isfinite(with_c["loss"])
    m.model.eval()


def test_the_evaluation_table_reports_the_teachers_and_the_students_paired_effects(setting):
    """`paired_contrast_table`: the teacher's mean TV over the scored agent-ticks the contrast
    changes, by hand; the student's equals the change `contrast_loss` compares."""
    from lsm.train.evaluate import format_contrast_table, paired_contrast_table

    m, ep = setting
    A = ep.targets["decision_dist"].shape[2]
    q = torch.full((ep.ticks, ep.n, len(CONTRASTS), A), float("nan"))
    q[:, :8] = ep.targets["decision_dist"][:, :8, None]
    q[:, :8, 1] = torch.roll(q[:, :8, 1], 1, -1)  # without messages the teacher answers otherwise
    ep2 = type(ep)(**{**ep.__dict__, "targets": {**ep.targets, "contrast_dist": q}})
    table = paired_contrast_table(m.model, [ep2])
    assert paired_contrast_table(m.model, [ep]) == {}  # no contrasts stored: nothing to report
    had = (ep.shown[:, :8] >= 0).any(-1) & ep.targets["valid"][:, :8]  # (T, 8) agent-ticks shown a message
    want = 0.5 * (q[:, :8, 1] - q[:, :8, 0]).abs().sum(-1)[had]
    nm = table["no_messages"]
    assert nm["agent_ticks"] == int(had.sum()) and nm["teacher_tv"] == pytest.approx(float(want.mean()), abs=1e-6)
    assert nm["teacher_low"] <= nm["teacher_tv"] <= nm["teacher_high"] and nm["student_tv"] > 0
    assert table["no_friend"]["teacher_tv"] == 0.0  # the teacher did not change without friends: 0, not missing
    assert "| no_messages |" in format_contrast_table(table)

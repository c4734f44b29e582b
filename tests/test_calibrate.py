"""`lsm calibrate`: the differentiable rollout's gradients against finite differences, fits that
recover a hidden value, identical fits from fixed seeds, bounds never left, a resumed fit, the
fitted scenario as `lsm rollout` runs it, and one paragraph for every malformed input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lsm.calibrate.check import run_check
from lsm.calibrate.fit import FitConfig, FitJournal, fit_adam, fit_gradient_free
from lsm.calibrate.observed import Observation, load_observed, share_se, write_observed
from lsm.calibrate.params import ParamSpace, parse_params, parse_values
from lsm.calibrate.relaxed import Simulator
from lsm.calibrate.run import calibrate
from lsm.cli import main
from lsm.config import CONFIG_ROOT, ConfigError, UsageError
from lsm.data_gen.planted.config import PlantedConfig
from lsm.data_gen.planted.policy import PlantedSociety
from lsm.data_gen.teacher.config import TeacherConfig
from lsm.data_gen.teacher.llm import Teacher
from lsm.infer.rollout import Rollout, RolloutConfig
from lsm.model.checkpoint import load_checkpoint
from lsm.society.groups import logit_offsets
from lsm.society.scenario import ScenarioError, check_against_world, load_scenario, scenario_from_dict, timeline
from lsm.society.world import build_world, save_world

SCENARIO = CONFIG_ROOT / "scenarios/vaccine_campaign.yaml"


@pytest.fixture(scope="module")
def setup(trained, tmp_path_factory):
    """(student, a 1,500-agent world and its file, the vaccine campaign)."""
    _, ckpt, _ = trained
    world = build_world(CONFIG_ROOT / "population/anes96.yaml", CONFIG_ROOT / "graph/default.yaml", 1500, 11)
    path = tmp_path_factory.mktemp("cal") / "w1500.h5"
    save_world(world, path)
    return load_checkpoint(ckpt), world, path, load_scenario(SCENARIO)


def _obs(sc, ticks: int, group: str = "party=republican") -> list[Observation]:
    rows = []
    for t in range(ticks):
        rows += [Observation(t, "share", a, "", 0.3, 0.02) for a in sc.actions.labels]
        rows += [Observation(t, "cumulative_share", "vaccinate", "", 0.4, 0.02), Observation(t, "share", "refuse", group, 0.1, 0.03),
                 Observation(t, "channel_mean", "trust_institutions", "", 0.5, 0.02)]
    return rows


def _short(sc, ticks):
    from lsm.calibrate.params import scenario_dict
    from lsm.society.scenario import shorten

    return scenario_from_dict(shorten(scenario_dict(sc), ticks))


def _gradient_and_differences(setup, ticks: int, seeds: list[int], h: np.ndarray):
    """Per seed: autograd's d(c · series)/d values and central differences of the same rollout
    (the same random numbers), c a fixed random functional of the series."""
    student, world, _, sc = setup
    sc = _short(sc, ticks)
    space = ParamSpace(parse_params("events.0.credibility=0..1,events.0.valence=-1..1,offsets.vaccinate.party=republican=-2..2",
                                    sc, world.population))
    obs = _obs(sc, ticks)
    c = torch.from_numpy(np.random.default_rng(0).normal(size=len(obs)))  # (M,)
    v = np.array([0.5, 0.2, 0.3])
    grads, diffs = [], []
    for seed in seeds:
        sim = Simulator(student, world, sc, space, obs, RolloutConfig(seed=seed))
        theta = torch.tensor(v, requires_grad=True)
        (sim.evaluate(v, theta=theta).expected @ c).backward()
        grads.append(theta.grad.numpy())
        row = []
        for j in range(len(v)):
            up, dn = v.copy(), v.copy()
            up[j] += h[j]
            dn[j] -= h[j]
            with torch.no_grad():
                row.append(float((sim.evaluate(up).expected - sim.evaluate(dn).expected) @ c) / (2 * h[j]))
        diffs.append(row)
    return np.array(grads), np.array(diffs)


def test_the_gradient_of_one_tick_equals_finite_differences(setup):
    """Within a tick the rollout is smooth in the unknowns (nothing drawn has fed back yet):
    autograd equals central differences."""
    grad, fd = _gradient_and_differences(setup, 1, [3], np.full(3, 0.01))
    assert np.abs(grad).max() > 0, "the series does not depend on the unknowns: the test could not fail"
    np.testing.assert_allclose(grad[0], fd[0], rtol=0.02, atol=1e-3 * np.abs(fd).max())


def test_the_straight_through_gradient_follows_the_expected_series_over_ticks(setup):
    """Over ticks the drawn run is piecewise constant in the unknowns (a draw flips or not): the
    straight-through gradient is that of the expectation over draws, which central differences
    averaged over 16 seeds estimate, up to the straight-through estimator's own bias (the state
    records the drawn one-hot, whose gradient it takes as the distribution's: here about a
    quarter). The offset's agree in sign and within 35 %; the debug student's event gradients
    are tiny and agree within the differences' noise."""
    grad, fd = _gradient_and_differences(setup, 3, list(range(16)), np.array([0.1, 0.1, 0.2]))
    g, f, sem = grad.mean(0), fd.mean(0), fd.std(0) / np.sqrt(len(fd))
    assert abs(f[2]) > 5 * sem[2], (g, f, sem)  # the offset moves the series: the test can fail
    assert np.sign(g[2]) == np.sign(f[2]) and abs(g[2] - f[2]) <= 0.35 * abs(f[2]), (g, f, sem)
    assert (np.abs(g[:2] - f[:2]) <= 3 * sem[:2] + 1e-3).all(), (g, f, sem)


def test_a_one_parameter_fit_recovers_a_hidden_offset_and_fixed_seeds_give_identical_fits(setup, tmp_path):
    """The check with the student as truth: the offset that made the observed series is found
    within 0.15 of its value, and the fitted run's series is within 1.5 times the truth's own
    seed-to-seed floor; the same call again gives the same fit."""
    student, world, path, _ = setup
    cfg = FitConfig(restarts=2, steps=14)
    args = (student.path, path, SCENARIO, "offsets.vaccinate=-2..2")
    a = run_check(*args, tmp_path / "a", cfg, truth="student", true="offsets.vaccinate=0.8", quiet=True)
    (row,) = a.rows
    assert abs(row["fitted"] - 0.8) <= 0.15, a.text
    assert 0 < row["interval95"][1] - row["interval95"][0] < 0.3, a.text
    assert a.error <= 1.5 * a.floor + 0.01, a.text
    b = run_check(*args, tmp_path / "b", cfg, truth="student", true="offsets.vaccinate=0.8", quiet=True)
    assert b.calibration.values.tolist() == a.calibration.values.tolist()
    assert b.calibration.traces["adam"].loss == a.calibration.traces["adam"].loss
    saved = json.loads((tmp_path / "a/check.json").read_text())
    assert saved["rows"][0]["true"] == 0.8 and saved["ratio_to_floor"] == pytest.approx(a.error / a.floor)


def test_the_fitted_scenario_is_what_lsm_rollout_runs(setup, tmp_path):
    """fitted_scenario.yaml is an ordinary scenario: `lsm rollout`'s run of it with the fit's seed
    holds exactly the drawn series the fit reports (offsets and event features applied)."""
    student, world, path, sc = setup
    space = ParamSpace(parse_params("events.1.credibility=0..1,offsets.refuse.party=republican=-1..1", sc, world.population))
    obs = _obs(sc, sc.ticks)
    cal = calibrate(student, world, sc, obs, space, FitConfig(restarts=1, steps=3), tmp_path / "fit", rollout_seed=5, quiet=True)
    fitted = load_scenario(tmp_path / "fit/fitted_scenario.yaml")
    assert fitted.offsets[0].where == {"party": ["republican"]} and fitted.offsets[0].logit == pytest.approx(cal.values[1])
    assert fitted.events[1].credibility == pytest.approx(cal.values[0])
    ticks = list(Rollout(student, world, fitted, RolloutConfig(seed=5)).ticks())
    sim = Simulator(student, world, sc, space, obs, RolloutConfig(seed=5))
    drawn = sim.drawn_series(np.stack([t.data["decision"].astype(np.int64) for t in ticks]),
                             torch.from_numpy(np.stack([t.data["channels"] for t in ticks])))
    np.testing.assert_allclose(drawn, cal.drawn, atol=1e-6)
    for name in ("fit.json", "series.csv", "fit.png", "loss.png", "report.md", "progress.json"):
        assert (tmp_path / "fit" / name).stat().st_size > 0


def test_bounds_are_never_left(setup, tmp_path):
    """Observations that ask for more than the box allows: every value Adam, CMA-ES and random
    search try lies inside the bounds, and the fit ends at the bound."""
    student, world, _, sc = setup
    sc = _short(sc, 2)
    space = ParamSpace(parse_params("offsets.vaccinate=-0.5..0.5", sc, world.population))
    obs = [Observation(t, "share", "vaccinate", "", 0.999, 0.001) for t in range(2)]
    sim = Simulator(student, world, sc, space, obs, RolloutConfig(seed=0))
    journal = FitJournal(tmp_path / "p.json", "x")
    tr = fit_adam(sim, FitConfig(restarts=2, steps=12, lr=1.0), journal)
    for m in ("cmaes", "random"):
        fit_gradient_free(sim, m, 10, 0, journal)
    for t in journal.traces.values():
        vals = np.array(t.values)
        assert (vals >= -0.5).all() and (vals <= 0.5).all(), t.method
    assert tr.best[1][0] > 0.45
    phi = torch.tensor([-1e4, 1e4, 0.0], dtype=torch.float64)
    box = ParamSpace(parse_params("offsets.vaccinate=-0.5..0.5,offsets.wait=0..1,offsets.refuse=-2..-1", sc, world.population))
    v = box.values(phi)
    assert v.tolist() == [-0.5, 1.0, -1.5]


def test_a_killed_fit_resumes_from_its_progress(setup, tmp_path):
    """The fit saves every rollout: rerun after a partial fit, it runs only the missing rollouts
    and ends where an uninterrupted fit ends."""
    student, world, _, sc = setup
    sc = _short(sc, 3)
    space = ParamSpace(parse_params("offsets.vaccinate=-2..2,events.0.credibility=0..1", sc, world.population))
    obs = _obs(sc, 3)
    whole = FitJournal(tmp_path / "whole.json", "fp")
    full = fit_adam(Simulator(student, world, sc, space, obs, RolloutConfig(seed=1)), FitConfig(restarts=2, steps=6), whole)
    done = []

    def killed_after_five(_: str) -> None:  # called once a rollout is saved: the kill comes after it
        done.append(1)
        if len(done) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_adam(Simulator(student, world, sc, space, obs, RolloutConfig(seed=1)), FitConfig(restarts=2, steps=6),
                 FitJournal(tmp_path / "part.json", "fp"), killed_after_five)
    sim = Simulator(student, world, sc, space, obs, RolloutConfig(seed=1))
    resumed = fit_adam(sim, FitConfig(restarts=2, steps=6), FitJournal(tmp_path / "part.json", "fp"))
    assert sim.rollouts == len(full.loss) - 5
    np.testing.assert_allclose(resumed.loss, full.loss, rtol=1e-9)
    assert len(FitJournal(tmp_path / "part.json", "another input").traces) == 0  # a changed input starts over


def test_the_gradient_free_baselines_run_on_the_same_simulator(setup, tmp_path):
    student, world, _, sc = setup
    sc = _short(sc, 2)
    space = ParamSpace(parse_params("events.0.exposure.fraction=0.1..1,neighbors.weights.friend=0..4", sc, world.population))
    sim = Simulator(student, world, sc, space, _obs(sc, 2), RolloutConfig(seed=0))
    journal = FitJournal(tmp_path / "p.json", "x")
    a = fit_gradient_free(sim, "cmaes", 9, 0, journal)
    b = fit_gradient_free(sim, "random", 5, 0, journal)
    assert len(a.loss) == 9 and len(b.loss) == 5 and sim.rollouts == 14
    assert len({tuple(v) for v in a.values}) == 9  # CMA-ES tried distinct points
    again = fit_gradient_free(Simulator(student, world, sc, space, _obs(sc, 2), RolloutConfig(seed=0)), "cmaes", 9, 0,
                              FitJournal(tmp_path / "q.json", "x"))
    assert again.values == a.values and again.loss == a.loss


def test_an_observation_file_round_trips_and_its_standard_errors_follow_n(setup, tmp_path):
    _, world, _, sc = setup
    rows = [Observation(0, "share", "vaccinate", "", 0.25, 0.01), Observation(2, "share", "refuse", "party=democrat|independent", 0.1, 0.02)]
    write_observed(tmp_path / "o.csv", rows)
    assert load_observed(tmp_path / "o.csv", sc, world.population) == rows
    (tmp_path / "n.csv").write_text("tick,metric,target,group,value,se,n\n1,cumulative_share,vaccinate,,0.5,,400\n3,share,wait,,0,,100\n")
    a, b = load_observed(tmp_path / "n.csv", sc, world.population)
    assert a.se == pytest.approx(0.025) and b.se == pytest.approx(share_se(0.0, 100)) and b.se > 0


MALFORMED = {
    "empty": ("", "empty"),
    "header": ("when,what\n1,2\n", "header"),
    "tick": ("tick,metric,target,value,se\n99,share,vaccinate,0.3,0.01\n", "line 2.tick"),
    "metric": ("tick,metric,target,value,se\n1,mean,vaccinate,0.3,0.01\n", "line 2.metric"),
    "action": ("tick,metric,target,value,se\n1,share,dance,0.3,0.01\n", "line 2.target"),
    "value": ("tick,metric,target,value,se\n1,share,vaccinate,1.7,0.01\n", "line 2.value"),
    "nan": ("tick,metric,target,value,se\n1,share,vaccinate,nan,0.01\n", "line 2.value"),
    "se": ("tick,metric,target,value,se,n\n1,share,vaccinate,0.3,,\n", "line 2.se"),
    "channel_n": ("tick,metric,target,value,se,n\n1,channel_mean,trust_peers,0.3,,50\n", "line 2.se"),
    "group": ("tick,metric,target,group,value,se\n1,share,vaccinate,party=green,0.3,0.01\n", "line 2.group"),
    "fields": ("tick,metric,target,value,se\n1,share,vaccinate,0.3\n", "line 2"),
    "twice": ("tick,metric,target,value,se\n1,share,vaccinate,0.3,0.01\n1,share,vaccinate,0.4,0.01\n", "observed once"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_observation_file_gets_one_paragraph_and_exit_status_2(setup, tmp_path, case, capsys):
    student, _, world_file, _ = setup
    text, expect = MALFORMED[case]
    obs = tmp_path / "obs.csv"
    obs.write_text(text)
    code = main(["calibrate", "--ckpt", student.path, "--world", str(world_file), "--scenario", str(SCENARIO),
                 "--observed", str(obs), "--fit", "offsets.vaccinate=-1..1", "--out", str(tmp_path / "o"), "--quiet", "true"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert str(obs) in err and expect in err, err
    assert not (tmp_path / "o").exists()


def test_a_binary_observation_file_is_refused_in_one_paragraph(setup, tmp_path):
    _, world, _, sc = setup
    p = tmp_path / "o.csv"
    p.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_observed(p, sc, world.population)


@pytest.mark.parametrize("spec, expect", [
    ("events.9.credibility=0..1", "event index"), ("events.0.credibility=0..2", "range"), ("events.0.mood=0..1", "event feature"),
    ("offsets.dance=-1..1", "ACTION"), ("offsets.vaccinate.party=green=-1..1", "category"), ("offsets.vaccinate=1..-1", "lo < hi"),
    ("neighbors.weights.cousin=0..1", "tie type"), ("weather=0..1", "events.I.FEATURE"), ("offsets.vaccinate", "bounds"),
    ("offsets.vaccinate=-1..1,offsets.vaccinate=-2..2", "once"),
])
def test_a_bad_parameter_spec_names_the_entry(setup, spec, expect):
    _, world, _, sc = setup
    with pytest.raises(ConfigError, match=expect):
        parse_params(spec, sc, world.population)


def test_adam_refuses_unknowns_the_rollout_is_not_differentiable_in(setup, tmp_path, capsys):
    student, _, world_file, _ = setup
    obs = tmp_path / "o.csv"
    obs.write_text("tick,metric,target,value,n\n0,share,vaccinate,0.3,100\n")
    code = main(["calibrate", "--ckpt", student.path, "--world", str(world_file), "--scenario", str(SCENARIO), "--observed", str(obs),
                 "--fit", "events.0.exposure.fraction=0..1", "--out", str(tmp_path / "o"), "--quiet", "true"])
    assert code == 2 and "--method cmaes" in capsys.readouterr().err


def test_true_values_are_checked(setup):
    _, world, _, sc = setup
    space = ParamSpace(parse_params("offsets.vaccinate=-1..1,events.0.credibility=0..1", sc, world.population))
    assert parse_values("offsets.vaccinate=0.5,events.0.credibility=0.2", space).tolist() == [0.5, 0.2]
    with pytest.raises(ConfigError, match="events.0.credibility"):
        parse_values("offsets.vaccinate=0.5", space)
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        parse_values("offsets.vaccinate=3,events.0.credibility=0.2", space)


def test_scenario_offsets_are_checked_and_applied_by_group(setup):
    _, world, _, sc = setup
    from lsm.calibrate.params import scenario_dict

    data = scenario_dict(sc)
    data["offsets"] = [{"action": "refuse", "logit": 1.5, "where": {"party": ["republican"]}}, {"action": "refuse", "logit": 0.5}]
    off = logit_offsets(scenario_from_dict(data), world.population)
    rep = world.population.categorical["party"] == world.population.categories["party"].index("republican")
    k = sc.actions.labels.index("refuse")
    assert (off[rep, k] == 2.0).all() and (off[~rep, k] == 0.5).all() and (np.delete(off, k, 1) == 0).all()
    with_offsets = scenario_from_dict(data)
    assert "offset: +1.5 on the logit of refuse for party republican" in timeline(with_offsets)  # lsm scenario shows them
    planted = PlantedConfig()
    a = PlantedSociety(planted, sc, world.population, world.graph, 0, 0)
    b = PlantedSociety(planted, with_offsets, world.population, world.graph, 0, 0)
    opinion = np.zeros(world.n)
    np.testing.assert_allclose(b.logits(opinion) - a.logits(opinion), off)  # the planted society applies them
    with pytest.raises(UsageError, match="offsets"):  # an LLM teacher cannot
        Teacher(TeacherConfig(), None, with_offsets, world.population, world.graph, 0)
    for bad, field in (({"action": "dance", "logit": 1}, "offsets[0].action"), ({"action": "refuse", "logit": 20}, "offsets[0].logit")):
        data["offsets"] = [bad]
        with pytest.raises(ScenarioError, match=field.replace("[", "\\[").replace("]", "\\]")):
            scenario_from_dict(data)
    data["offsets"] = [{"action": "refuse", "logit": 1, "where": {"planet": ["mars"]}}]
    with pytest.raises(ScenarioError, match="offsets\\[0\\].where.planet"):
        check_against_world(scenario_from_dict(data), world.population, world.graph)
    with pytest.raises(ScenarioError, match="planet"):  # a rollout's policy, built before the loop checks the world
        logit_offsets(scenario_from_dict(data), world.population)


def test_the_real_data_notebook_runs_from_a_clone(tmp_path, monkeypatch):
    """calibrate/real_data.ipynb, executed in its quick mode (one training epoch, 1,000 agents, three
    Adam steps) into a temporary folder: every cell runs and the fit's plot is shown."""
    import os
    import sys
    from pathlib import Path

    import nbclient
    import nbformat

    path = Path(__file__).resolve().parents[1] / "calibrate/real_data.ipynb"
    monkeypatch.setenv("LSM_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("LSM_CALIBRATE_OUT", str(tmp_path))
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    assert any(o.get("output_type") == "display_data" for c in nb.cells for o in c.get("outputs", []))
    assert (tmp_path / "fit/fitted_scenario.yaml").is_file()


def test_checkpointed_chunks_give_the_same_series_and_gradient(setup):
    """Above `CHECKPOINT_AGENTS` each tick is recomputed a chunk of agents at a time in the backward
    pass: forced on here with 256-agent chunks, the series and the gradient equal the plain pass."""
    student, world, _, sc = setup
    sc = _short(sc, 3)
    space = ParamSpace(parse_params("events.0.credibility=0..1,offsets.vaccinate.party=republican=-2..2", sc, world.population))
    out = []
    for forced in (False, True):
        sim = Simulator(student, world, sc, space, _obs(sc, 3), RolloutConfig(seed=2))
        if forced:
            sim.policy.use_checkpoint, sim.policy.chunk = True, 256
        theta = torch.tensor([0.4, 0.5], requires_grad=True)
        ev = sim.evaluate(theta.detach().numpy(), theta=theta)
        ev.loss.backward()
        out.append((ev.expected.detach().numpy(), ev.drawn, theta.grad.numpy()))
    np.testing.assert_allclose(out[1][0], out[0][0], atol=1e-6)
    np.testing.assert_array_equal(out[1][1], out[0][1])
    np.testing.assert_allclose(out[1][2], out[0][2], rtol=1e-4, atol=1e-6)
    assert np.abs(out[0][2]).max() > 0

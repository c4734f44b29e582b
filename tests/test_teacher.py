"""The teacher end to end with the real embedded SmolLM2 (tiny worlds, 2 ticks, debug preset)."""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from lsm.config import load_config, shipped
from lsm.data_gen.teacher import prompts as ag
from lsm.data_gen.teacher.backends.base import Generation, LLMBackend
from lsm.society import seeds
from lsm.society.scenario import load_scenario
from lsm.society.store import StoreError, TraceFile
from lsm.data_gen.gen import generate
from lsm.society.loop.journal import JournalMismatch
from lsm.data_gen.teacher.config import TeacherConfig
from lsm.society.world import build_world, save_world

DEBUG = shipped("teacher", "debug.yaml")


@pytest.fixture(scope="module")
def backend(embedded):
    return embedded


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 5-agent ANES world and 2-tick versions of the shipped scenarios."""
    d = tmp_path_factory.mktemp("tiny")
    save_world(build_world(shipped("population", "anes96.yaml"), shipped("graph", "default.yaml"), agents=5, seed=3), d / "w.h5")
    for name in ("guessing_game", "vaccine_campaign"):
        data = yaml.safe_load(shipped("scenarios", f"{name}.yaml").read_text())
        data["ticks"] = 2
        data["events"] = [e for e in data["events"] if e["tick"] < 2]
        (d / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return d


@pytest.fixture(scope="module")
def vaccine_s2(tiny, backend):
    """The tiny world's 2-tick vaccine campaign by the `debug` teacher, seed 2: what
    `lsm gen --teacher debug --seed 2` writes (the backend is the one that preset builds)."""
    out = tiny / "vaccine_s2.h5"
    generate(tiny / "w.h5", tiny / "vaccine_campaign.yaml", DEBUG, seed=2, out=out, backend=backend, quiet=True)
    return out


def test_constrained_decoding_always_parses(backend):
    sc = load_scenario(shipped("scenarios", "vaccine_campaign.yaml"))
    schema = ag.answer_schema(sc, "full", ag.TextLimits(60, 40, 30))
    convs = [ag.conversation(ag.system_prompt(sc, "full"), f"You are agent {i}. {sc.question}") for i in range(4)]
    for g in backend.generate(convs, schema=schema, seed=1, max_tokens=200):
        obj = json.loads(g.text)  # always valid JSON with every key, in order
        assert list(obj) == list(schema["properties"])
        assert obj["decision"] in sc.actions.labels and -5 <= obj["stance"] <= 5
        assert all(0 <= obj["ratings"][c] <= 10 for c in sc.channel_names)


def test_tree_scoring_equals_separate_scoring(backend):
    """The packed prefix-tree pass gives the same log-probabilities as one sequence per option."""
    import torch

    convs = [[{"role": "user", "content": f"Person {i} hears about a vaccine."}, {"role": "assistant", "content": "I decided to"}] for i in range(3)]
    opts = [[" get vaccinated", " wait and see", " refuse", " 1", " 10"]] * 3
    tree = backend.option_logprobs(convs, opts)
    for conv, o, got in zip(convs, opts, tree):
        prefix = backend.prompt_ids(conv)
        want = []
        for op in o:
            ids = prefix + backend._ids(op)
            k = len(ids) - len(prefix)
            with torch.inference_mode():
                lp = torch.log_softmax(backend.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            want.append(sum(float(lp[j - 1, ids[j]]) for j in range(len(ids) - k, len(ids))))
        np.testing.assert_allclose(got, want, atol=2e-3)


def test_gen_guessing_game_end_to_end(tiny, backend):
    out = tiny / "gg.h5"
    summary = generate(tiny / "w.h5", tiny / "guessing_game.yaml", DEBUG, seed=0, out=out, backend=backend, quiet=True)
    assert summary["agent_ticks"] == 10
    # the profile (`lsm gen --profile`): every teacher phase timed, the backend's own inside them
    from lsm.data_gen.gen import format_profile
    from lsm.data_gen.teacher.llm import PROFILE_PHASES

    prof = {k: v["seconds"] for k, v in summary["profile"].items()}
    assert set(PROFILE_PHASES) | {"journal"} <= set(prof) and prof["generation"] > 0 and prof["option scoring"] > 0
    outer = sum(v for k, v in prof.items() if not k.startswith("llm "))
    # the summary rounds wall time to 0.1 s and each phase to 1 ms
    assert outer <= summary["wall_seconds_this_process"] + 0.05 + 0.0005 * len(prof)
    inside = prof["llm prefill"] + prof["llm decode"] + prof["llm constrained decoding"]
    assert 0 < prof["llm prefill"] and abs(inside - prof["generation"] - prof.get("repair attempts", 0)) < 0.05 * inside + 0.05
    assert prof["llm scoring forward"] <= prof["option scoring"] + prof["content-free calibration"] + prof["paired contrasts"] + 1e-6
    assert "| llm" not in format_profile(summary) and "&nbsp;&nbsp;prefill" in format_profile(summary)
    with TraceFile(out) as tf:
        assert tf.n_ticks == 2 and tf.n_agents == 5
        valid = tf.array("valid")
        assert valid.all(), tf.array("error")[~valid]  # schema-constrained decoding: every answer parses
        values, dist = tf.array("decision_value"), tf.array("decision_dist")
        np.testing.assert_allclose(dist[valid].sum(-1), 1, atol=1e-4)
        assert np.all(np.isin(values[valid], np.arange(0, 101)))
        assert ((tf.array("decision")[valid] >= 0) & (tf.array("decision")[valid] < 10)).all()
        cd = tf.array("channel_dist").astype(np.float32)
        np.testing.assert_allclose(cd[valid].sum(-1), 1, atol=2e-2)
        emb = tf.array("reasoning_emb")
        assert emb.dtype == np.float16 and np.abs(np.linalg.norm(emb[valid].astype(np.float32), axis=-1) - 1).max() < 1e-2
        assert "persona_emb" not in tf.f["population"] and tf.f["events/text_emb"].shape[1] == 384  # templated personas: nothing to embed
        # The trigger announces 2/3 of the mean of tick 0's valid answers, at tick 1.
        mean = float(values[0][valid[0]].mean())
        announced = [e for e in tf.events() if e["origin"] == "trigger:announce_winner"]
        assert len(announced) == 1 and announced[0]["tick"] == 1
        assert f"{mean * 0.6666667:.1f}" in announced[0]["text"] and f"{mean:.1f}" in announced[0]["text"]
        # Agents exposed at tick 1 saw it, and their prompt-visible neighbours are real in-neighbours.
        assert (tf.array("exposed_events")[1] == announced[0]["uid"]).any(axis=1).all()
        shown, (_, graph) = tf.array("shown_neighbors"), tf.world()
        assert (shown[0] == -1).all()  # tick 0: nobody has spoken yet
        senders = {i: set(graph.edge_index[0][graph.edge_index[1] == i].tolist()) - {i} for i in range(5)}
        k = yaml.safe_load(DEBUG.read_text())["neighbors"]["k"]
        count = seeds.rng(0, seeds.Stream.NEIGHBOR_COUNT, 1).integers(0, k + 1, size=5)  # varied neighbourhoods (the default): 0..K heard
        assert json.loads(tf.f.attrs["neighbor_rule"])["vary"] is True
        for i in range(5):
            js = [int(j) for j in shown[1, i] if j >= 0]
            spoke = {j for j in senders[i] if tf.array("expression")[0][j]}  # in-neighbours with a message
            assert set(js) <= spoke and len(set(js)) == len(js) and len(js) == min(count[i], len(spoke)), (i, js, spoke)
        assert (shown[1] >= 0).any()
        ds = tf.to_dataset()
        assert len(ds) == 10 and "reasoning" in ds.column_names


class Corrupting(LLMBackend):
    """Wraps a real backend and damages chosen answers: malformed-answer injection."""

    def __init__(self, inner, damage):
        self.inner, self.damage, self.calls = inner, damage, 0
        self.name, self.supports_logprobs, self.supports_schema = "corrupting", inner.supports_logprobs, True

    def generate(self, conversations, schema=None, temperature=0.7, seed=0, max_tokens=256):
        gens = self.inner.generate(conversations, schema, temperature, seed, max_tokens)
        self.calls += 1
        for i, g in enumerate(gens):
            g.text = self.damage(self.calls, i, g.text)
        return gens

    def score_options(self, conversations, option_labels):
        return self.inner.score_options(conversations, option_labels)


def test_malformed_answers_are_repaired_or_recorded_invalid(tiny, backend):
    def damage(call, i, text):
        if call == 1:  # first attempt of the first chunk: break every answer differently
            return [text[: len(text) // 2], text.replace('"stance": ', '"stance": 99, "x": '), "Sure! I think I will wait.",
                    "```json\n" + text + ",\n```", text][i % 5]
        return text

    wrapped = Corrupting(backend, damage)
    out = tiny / "repair.h5"
    s = generate(tiny / "w.h5", tiny / "vaccine_campaign.yaml", DEBUG, seed=0, out=out, backend=wrapped, quiet=True)
    with TraceFile(out) as tf:
        valid, err, att = tf.array("valid"), tf.array("error"), tf.array("attempts")
        assert valid.shape == (2, 5)  # no agent-tick lost
        assert att[0, 4] == 1 and att[0, 3] == 1  # an intact answer, and one fixed by the lenient parser
        assert (att[0, :3] >= 2).all()  # the broken ones were re-asked
        for t, i in zip(*np.nonzero(~valid)):
            assert err[t, i].startswith("after 3 attempts")
        assert s["repaired"] >= 1


class Refusing(Corrupting):
    """A real backend whose every answer is prose, never JSON: the answers are the injected fault,
    so the model is not asked to write them (it still scores whatever the teacher scores)."""

    def generate(self, conversations, schema=None, temperature=0.7, seed=0, max_tokens=256):
        self.calls += 1
        return [Generation("I refuse to answer in JSON.", 10, 8, 0.0) for _ in conversations]


def test_unrepairable_answers_are_invalid_with_reason(tiny, backend):
    wrapped = Refusing(backend, None)
    out = tiny / "bad.h5"
    s = generate(tiny / "w.h5", tiny / "vaccine_campaign.yaml", DEBUG, seed=0, out=out, backend=wrapped, quiet=True)
    assert s["invalid"] == 10
    with TraceFile(out) as tf:
        assert not tf.array("valid").any() and (tf.array("attempts") == 3).all()
        assert all("no JSON object" in e for e in tf.array("error").ravel())
        assert (tf.array("decision") == -1).all()


def test_resume_after_kill_9_gives_identical_content(tiny, vaccine_s2, kill_after_tick):
    """Kill -9 `lsm gen` once it has journaled a tick; the same command finishes the run, and
    the file equals an uninterrupted run's (the module's seed-2 trace)."""
    lsm = [sys.executable, "-m", "lsm"]
    args = ["gen", "--world", str(tiny / "w.h5"), "--scenario", str(tiny / "vaccine_campaign.yaml"),
            "--teacher", str(DEBUG), "--seed", "2", "--quiet", "true"]
    ref, cut = vaccine_s2, tiny / "cut.h5"
    journal = kill_after_tick(args, cut, tick=0)
    assert not cut.exists() and (journal / "tick_0000.npz").exists() and not (journal / "tick_0001.npz").exists()
    with pytest.raises(StoreError):
        TraceFile(cut)
    r = subprocess.run(lsm + args + ["--out", str(cut)], check=True, capture_output=True, text=True)
    assert "resumed at tick 1" in r.stdout
    assert not journal.exists()
    with TraceFile(ref) as a, TraceFile(cut) as b:
        assert a.fields == b.fields and a.events() == b.events()
        for name in a.fields:
            if name == "latency_s":
                continue
            x, y = a.array(name), b.array(name)
            assert x.shape == y.shape, name
            if x.dtype == object:
                assert (x == y).all(), name
            else:
                np.testing.assert_array_equal(x, y, err_msg=name)


def test_journal_of_another_run_is_refused(tiny):
    out = tiny / "other.h5"
    journal = Path(str(out) + ".journal")
    journal.mkdir()
    (journal / "run.json").write_text(json.dumps({"fingerprint": "someone-else"}))
    with pytest.raises(JournalMismatch, match="--restart"):
        generate(tiny / "w.h5", tiny / "vaccine_campaign.yaml", DEBUG, seed=0, out=out, quiet=True)


def test_teacher_config_errors_name_the_field(tmp_path):
    from lsm.config import ConfigError

    p = tmp_path / "t.yaml"
    p.write_text("backend: openai\nneighbor_weights: {friends: 1}\ntemperature: 3\n")
    with pytest.raises(ConfigError) as e:  # the nested neighbour rule is checked first (older flat spelling)
        load_config(TeacherConfig, p)
    assert "neighbors.weights.friends" in str(e.value)
    p.write_text("backend: openai\nneighbors: {weights: {friend: 1}}\ntemperature: 3\n")
    with pytest.raises(ConfigError) as e:  # then every rule of the teacher config at once
        load_config(TeacherConfig, p)
    msg = str(e.value)
    assert "'openai'" in msg and "'temperature' = 3" in msg


def test_llm_backstories_extend_personas(backend):
    from lsm.society.world.backstory import META_PROMPTS, write_backstories

    personas = ["Ana R., aged 34, female, nurse, lives in a city.", "Bob K., aged 67, male, retired, lives in a rural area.",
                "Cy T., aged 22, male, student, lives in a town."]
    b = write_backstories(personas, backend, seed=1, max_tokens=40)
    assert len(b.texts) == 3 and set(b.prompt_index.tolist()) <= set(range(len(META_PROMPTS)))
    assert b.failed == [] and all(b.texts)
    assert len(set(b.texts)) == len(b.texts)
    again = write_backstories(personas, backend, seed=1, max_tokens=40)
    assert again.texts == b.texts  # seeded
    # an answer without a word is asked again once, then left out: the persona alone remains
    mute = Muting(backend, "Cy T.")
    left = write_backstories(personas, mute, seed=1, max_tokens=40)
    assert left.failed == [2] and left.texts[2] == "" and left.texts[:2] == b.texts[:2] and mute.asked == 2


class Muting(Corrupting):
    """A real backend whose answers to prompts naming `who` are "..." (no word), every time."""

    def __init__(self, inner, who: str):
        super().__init__(inner, None)
        self.who, self.asked = who, 0

    def generate(self, conversations, schema=None, temperature=0.7, seed=0, max_tokens=256):
        gens = self.inner.generate(conversations, schema, temperature, seed, max_tokens)
        for conv, g in zip(conversations, gens):
            if self.who in conv[0]["content"]:
                g.text, self.asked = "...", self.asked + 1
        return gens


def test_stored_contrasts_equal_a_fresh_rescoring(tiny, backend, tmp_path):
    """`contrast_dist` holds, for the sampled agent-ticks, the decision distribution of the prompt
    rebuilt from the trace under each contrast (messages of all or of one tie type removed, events
    removed), scored without the reasoning and calibrated by the content-free prompt; the rows of
    agent-ticks not sampled are NaN, and an old trace without contrasts still opens."""
    from lsm.data_gen.teacher.sensitivity import TracePrompts
    from lsm.society.contrasts import CONTRASTS, keeps_events, kept_messages
    from lsm.society.loop.neighbors import EdgeTyper

    cfg = yaml.safe_load(DEBUG.read_text())
    cfg["contrast_fraction"] = 0.6
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "c.h5"
    generate(tiny / "w.h5", tiny / "vaccine_campaign.yaml", tmp_path / "t.yaml", seed=2, out=out, backend=backend, quiet=True)
    with TraceFile(out) as tf:
        assert json.loads(tf.f.attrs["contrasts"]) == list(CONTRASTS) and tf.f.attrs["schema_version"] == "1.1"
        c, valid = tf.array("contrast_dist"), tf.array("valid")  # (T, N, X, A)
        rebuilt, sc = TracePrompts(tf), tf.scenario
        sampled = np.isfinite(c[..., 0, 0])
        assert sampled.any() and not sampled.all() and not (sampled & ~valid).any()
        typer = EdgeTyper(tf.world()[1])
        cases = []
        for t, i in zip(*np.nonzero(sampled)):
            parts = rebuilt.parts(int(i), int(t))
            ties = typer(np.array(parts.shown, dtype=np.int64), np.full(len(parts.shown), i))
            for x, name in enumerate(CONTRASTS):
                keep = kept_messages(name, ties)
                edited = replace(parts, messages=[m for m, k in zip(parts.messages, keep) if k],
                                 events=parts.events if keeps_events(name) else [])
                cases.append(((t, i, x), rebuilt.user(int(i), int(t), edited)))
        assert any(x == 1 and c[t, i, 1].tolist() != c[t, i, 0].tolist() for (t, i, x), _ in cases)  # removing messages moves it
    opts = ag.decision_options(sc)
    bare = [{"role": "assistant", "content": ag.bare_decision_prefix()}]
    raw = np.array(backend.score_options([ag.conversation(rebuilt.system, u) + bare for _, u in cases], [opts] * len(cases)))
    cf = backend.score_options([ag.conversation(rebuilt.system, ag.user_prompt(sc, 0, "N/A", "N/A", ag.Memory(), 0, [], [])) + bare],
                               [opts])[0]
    cal = raw / np.asarray(cf)
    cal /= cal.sum(1, keepdims=True)
    np.testing.assert_allclose(np.array([c[k] for k, _ in cases]), cal, atol=2e-3)
    from lsm.train.data import load_episode

    old = Path(__file__).resolve().parents[1] / "data_gen/corpus/n20/vaccine_campaign_s0.h5"  # schema 1.0, no contrasts
    assert "contrast_dist" in load_episode(out).targets and "contrast_dist" not in load_episode(old).targets


def test_sensitivity_report_rebuilds_prompts_from_the_trace(tiny, vaccine_s2, backend, tmp_path, capsys):
    """The prompt rebuilt from the trace, continued with the recorded reasoning and calibrated by
    the content-free prompt (divide, renormalise), re-scores to the recorded decision distribution;
    `lsm sensitivity --write` stores in the trace what it reports, and its no-messages TV is the
    TV between the rebuilt prompt's scores with and without the messages."""
    from lsm.cli import main
    from lsm.data_gen.teacher.sensitivity import VARIANTS, TracePrompts

    out = tmp_path / "sens.h5"
    shutil.copy(vaccine_s2, out)  # `--write` below stores the report in the trace: a copy, the module's stays as written
    with TraceFile(out) as tf:
        rebuilt, sc = TracePrompts(tf), tf.scenario
        valid, reasoning, dist = tf.array("valid"), tf.array("reasoning"), tf.array("decision_dist")
        rows = [(t, i) for t in range(2) for i in range(5) if valid[t, i]]
        users = {(t, i): rebuilt.user(i, t) for t, i in rows}
        assert any(rebuilt.parts(i, 1).messages for t, i in rows if t == 1)  # the messages are part of what is checked
        # order-free targets: every order of an agent's shown messages (debug shows 2 at most: both orders)
        orders = {(t, i): ag.message_orders(len(rebuilt.parts(i, t).messages), rebuilt.cfg.orders,
                                             seeds.rng(2, seeds.Stream.MESSAGE_ORDERS, t, i)) for t, i in rows}
        order_users = {r: [rebuilt.user(i, t, replace(rebuilt.parts(i, t), messages=[rebuilt.parts(i, t).messages[k] for k in o]))
                           for o in orders[r]] for r in rows for t, i in [r]}
        spread = tf.array("decision_dist_order_sd")
    assert rebuilt.cfg.orders == 4 and any(len(o) == 2 for o in orders.values())  # some agent-tick is averaged over 2 orders
    opts = ag.decision_options(sc)
    flat = [(r, u) for r in rows for u in order_users[r]]
    raw = np.array(backend.score_options([ag.conversation(rebuilt.system, u) + [
        {"role": "assistant", "content": ag.decision_prefix(str(reasoning[r]))}] for r, u in flat], [opts] * len(flat)))
    content_free = ag.conversation(rebuilt.system, ag.user_prompt(sc, 0, "N/A", "N/A", ag.Memory(), 0, [], [])) + [
        {"role": "assistant", "content": ag.decision_prefix("N/A")}]
    cal = raw / np.array(backend.score_options([content_free], [opts])[0])
    cal /= cal.sum(1, keepdims=True)
    per_row = {r: np.array([c for (r2, _), c in zip(flat, cal) if r2 == r]) for r in rows}  # (orders, A) each
    np.testing.assert_allclose(dist[tuple(np.array(rows).T)], [per_row[r].mean(0) for r in rows], atol=2e-3)
    np.testing.assert_allclose(spread[tuple(np.array(rows).T)], [per_row[r].std(0) for r in rows], atol=2e-3)
    two_orders = [r for r in rows if len(per_row[r]) == 2]
    assert max(np.abs(per_row[r][0] - per_row[r][1]).max() for r in two_orders) > 1e-3  # the orders differ: averaging matters
    shown_only = np.array([per_row[r][0] for r in rows])
    assert np.abs(dist[tuple(np.array(rows).T)] - shown_only).max() > 1e-3  # a target of the shown order alone fails the check
    assert np.abs(cal - raw).max() > 0.02  # calibration moves these distributions: dropping it fails the check
    # every channel's 11-level distribution is the rating continuation of *that* channel's name
    two = rows[:2]
    ratings = backend.score_options([ag.conversation(rebuilt.system, users[r]) + [
        {"role": "assistant", "content": ag.rating_prefix(str(reasoning[r]), c)}] for r in two for c in sc.channel_names],
        [ag.RATING_OPTIONS] * (len(two) * len(sc.channel_names)))
    with TraceFile(out) as tf:
        recorded = tf.array("channel_dist")[tuple(np.array(two).T)].astype(np.float32)  # (2, C, 11)
    np.testing.assert_allclose(recorded, np.array(ratings).reshape(recorded.shape), atol=3e-3)

    js = tmp_path / "s.json"
    assert main(["sensitivity", str(out), "--tick", "1", "--agents", "5", "--write", "true", "--json", str(js)]) == 0
    assert "no_messages" in capsys.readouterr().out
    r = json.loads(js.read_text())
    with TraceFile(out) as tf:
        assert json.loads(tf.f.attrs["sensitivity"]) == r
        np.testing.assert_array_equal(tf.array("decision_dist"), dist)  # the trace itself is untouched
    assert r["tick"] == 1 and r["agents"] == len(r["agent_ids"]) >= 1 and set(r["variants"]) == set(VARIANTS[1:])
    prefix = [{"role": "assistant", "content": '{"decision": "'}]
    with TraceFile(out) as tf:
        rebuilt = TracePrompts(tf)
        parts_of = {i: rebuilt.parts(i, 1) for i in r["agent_ids"]}
        stance0, valid0, said0 = tf.array("stance")[0], tf.array("valid")[0], rebuilt.expression[0]
        heard = {i for t, i in rows if t == 1 and rebuilt.parts(i, 1).messages}
    assert set(r["agent_ids"]) == heard  # --agents 5: every agent of tick 1 who heard a message

    def tv_against_shown(i: int, variants: list) -> list[float]:
        """The TV between agent i's prompt as shown and each of its `variants` (RecordedPrompt edits)."""
        users = [ag.user_prompt(sc, 1, rebuilt.pop.names[i], v.persona, v.memory, rebuilt.cfg.memories, v.events, v.messages)
                 for v in [parts_of[i], *variants]]
        p = np.asarray(backend.score_options([ag.conversation(rebuilt.system, u) + prefix for u in users], [opts] * len(users)))
        return [0.5 * float(np.abs(q - p[0]).sum()) for q in p[1:]]

    def most_opposite(i: int) -> list:
        """The documented edit: each shown message replaced by the message of the agent with the most
        opposite stance last tick (most opposite to the mean stance of those shown), as many as were shown."""
        shown = parts_of[i].shown
        mean = float(np.nanmean([stance0[j] for j in shown]))
        lean = np.sign(mean) if np.isfinite(mean) and mean != 0 else 1.0
        pool = [j for j in range(len(stance0)) if valid0[j]]
        chosen = sorted(pool, key=lambda j: stance0[j] * lean)[: len(shown)]  # ties: the lower id first
        return [(rebuilt.pop.names[j], ag.relation_words(rebuilt.rel.relation(i, j)) if j in shown else "an acquaintance", said0[j])
                for j in chosen]

    by_hand: dict[str, list[float]] = {"no_messages": [], "reordered_messages": [], "opposite_messages": []}
    for i, parts in parts_of.items():
        no, opposite = tv_against_shown(i, [replace(parts, messages=[]), replace(parts, messages=most_opposite(i))])
        by_hand["no_messages"].append(no)
        by_hand["opposite_messages"].append(opposite)
        if len(parts.messages) >= 2:
            by_hand["reordered_messages"].append(tv_against_shown(i, [replace(parts, messages=parts.messages[::-1])])[0])
    for name, tv in by_hand.items():
        got = r["variants"][name]
        np.testing.assert_allclose(got["tv"], tv, atol=2e-3, err_msg=name)  # each agent's own TV, in agent_ids order
        assert got["mean_tv"] == pytest.approx(float(np.mean(tv)), abs=2e-3) and got["low"] <= got["mean_tv"] <= got["high"]
    # the order control is measured over the sampled agents shown two or more messages, and only them: one at least
    ro = r["variants"]["reordered_messages"]
    assert ro["agent_ids"] == [i for i in r["agent_ids"] if len(parts_of[i].messages) >= 2] and ro["agents"] == len(ro["tv"]) >= 1
    assert max(by_hand["reordered_messages"]) > 1e-3  # the order moves the teacher: a control that reads 0 is not vacuous
    # another agent's persona: each agent's TV is the one of some other agent's persona in its prompt
    n = len(rebuilt.pop.names)
    for i, got in zip(r["variants"]["other_persona"]["agent_ids"], r["variants"]["other_persona"]["tv"]):
        others = tv_against_shown(i, [replace(parts_of[i], persona=rebuilt.pop.persona[k]) for k in range(n) if k != i])
        assert min(abs(got - x) for x in others) < 2e-3, (i, got, others)


def test_bench_times_the_teacher_beside_a_baseline(tmp_path):
    """`lsm bench --teacher_baseline`: both teachers timed on the same world in one run, the
    ratio printed and stored (tiny: 2 agents, one student size)."""
    from lsm.infer.run import run_bench

    lines: list[str] = []
    res = run_bench([100], teacher="debug", teacher_agents=2, ticks=1, teacher_baseline="embedded_baseline",
                    json_out=tmp_path / "b.json", echo=lines.append)
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["teacher_baseline"]["teacher"] == "embedded_baseline" and data["teacher"]["agent_ticks"] == 2
    assert data["teacher_baseline"]["agent_ticks_per_s"] > 0 and res is not None
    assert any(ln.startswith("teacher baseline (embedded_baseline") for ln in lines)
    assert any("x the baseline)" in ln for ln in lines)

"""The variants corpus' scenario variants (data_gen/corpus/variants.py): they load as scenarios,
are seeded, state one rule value consistently, never put a held-out value in a training variant,
and paraphrase every event text faithfully to its placeholders. No LLM."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from lsm.config import ConfigError, UsageError, read_yaml, resolve_config
from lsm.data_gen.corpus import variants as V
from lsm.society.scenario import load_scenario

SCENARIOS = ("guessing_game", "vaccine_campaign", "product_adoption")
K = 3


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, list[Path]]:
    out = tmp_path_factory.mktemp("variants")
    return {s: V.write_variants(s, out / "s0", K, seed=0) for s in SCENARIOS}


def _texts(sc) -> list[str]:
    """Every text of a loaded scenario that may state the rule."""
    return [sc.context, sc.question, sc.description] + [e.text for e in sc.events] + [t.event.text for t in sc.triggers]


def _states(text: str, value: V.RuleValue) -> bool:
    """`text` states `value` (the value or one of its phrases, as a whole: `15%` does not state `5%`)."""
    return any(re.search(r"(?<![\w.$/])" + re.escape(p) + r"(?![\w/])", text) for p in [value.value, *value.phrases.values()])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_variants_load_as_the_scenario_with_only_texts_numbers_and_rule_changed(written, scenario):
    shipped = load_scenario(resolve_config(scenario, "scenarios"))
    paths = written[scenario]
    assert [p.name for p in paths] == [f"{scenario}_v{k}.yaml" for k in range(1, K + 1)] + \
        [f"{scenario}_heldout_{v.id}.yaml" for v in V.load_spec(scenario).rule.held_out]
    for path in paths:
        sc = load_scenario(path)
        text = path.read_text()
        assert text.startswith(f"# {scenario}, ") and "jitter_events(seed=" in text and "paraphrase drawn" in text
        assert sc.name == scenario and sc.actions == shipped.actions and sc.ticks == shipped.ticks
        assert sc.description.startswith(shipped.description.split(",")[0]) and "jittered" in sc.description
        assert "[[" not in text
        pairs = list(zip(sc.events, shipped.events)) + [(a.event, b.event) for a, b in zip(sc.triggers, shipped.triggers)]
        assert len(sc.events) == len(shipped.events) and len(sc.triggers) == len(shipped.triggers)
        for ev, orig in pairs:
            assert (ev.tick, ev.source, ev.source_type, ev.channel, ev.framing, ev.exposure) == \
                   (orig.tick, orig.source, orig.source_type, orig.channel, orig.framing, orig.exposure)
            assert ev.text != orig.text  # a paraphrase, never the shipped text
            assert 0.1 <= ev.credibility <= 1 and abs(ev.valence) <= 1
            assert (ev.valence > 0) == (orig.valence > 0) and (ev.valence < 0) == (orig.valence < 0)  # KEEP_SIGN
        assert [t.when for t in sc.triggers] == [t.when for t in shipped.triggers]


def test_jitter_and_paraphrases_are_seeded(written, tmp_path):
    again = {s: V.write_variants(s, tmp_path / "again", K, seed=0) for s in SCENARIOS}
    other = {s: V.write_variants(s, tmp_path / "s1", K, seed=1) for s in SCENARIOS}
    for s in SCENARIOS:
        for a, b, c in zip(written[s], again[s], other[s]):
            assert a.read_bytes() == b.read_bytes()
            assert a.read_bytes() != c.read_bytes()
            sa, sc = load_scenario(a), load_scenario(c)
            assert [e.credibility for e in sa.events] != [e.credibility for e in sc.events]
        texts = {tuple(e.text for e in load_scenario(p).events) for p in other[s] + written[s]}
        assert len(texts) > 1  # the paraphrase draw varies with the seed and the variant
        creds = {tuple(e.credibility for e in load_scenario(p).events) for p in written[s]}
        assert len(creds) == len(written[s])  # each variant its own jitter
    # the same variant of two scenarios does not share its draws
    c0 = [load_scenario(written[s][0]).events[0].credibility for s in SCENARIOS]
    assert len(set(c0)) == len(SCENARIOS)


def test_guessing_game_states_its_rule_value_consistently(written, tmp_path):
    rule = V.load_spec("guessing_game").rule
    assert (rule.shipped.value, [v.value for v in rule.held_out]) == ("2/3", ["3/4"])
    paths = written["guessing_game"] + V.write_variants("guessing_game", tmp_path, 6, seed=3)
    seen = set()
    for path in paths:
        sc = load_scenario(path)
        scale = sc.triggers[0].compute["winning"].scale
        value = next(v for v in rule.values if abs(v.scale - scale) < 1e-9)
        seen.add(value.value)
        words, fraction = value.phrases["words"], value.phrases["fraction"]
        assert words in sc.context and words in sc.question and f"p = {fraction}" in sc.description
        assert words in sc.events[0].text
        assert words in sc.triggers[0].event.text or fraction in sc.triggers[0].event.text
        for other in rule.values:
            if other is not value:
                assert not any(_states(t, other) for t in _texts(sc)), (path.name, other.value)
    assert seen == {v.value for v in rule.values}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_held_out_values_never_appear_in_training_variants(scenario, tmp_path):
    rule = V.load_spec(scenario).rule
    assert rule is not None and rule.held_out and rule.shipped in rule.train
    for seed in range(3):
        paths = V.write_variants(scenario, tmp_path / f"s{seed}", 2 * len(rule.train), seed=seed)
        train = [p for p in paths if "_heldout_" not in p.name]
        held = [p for p in paths if "_heldout_" in p.name]
        assert len(train) == 2 * len(rule.train) and len(held) == len(rule.held_out)
        taken = []
        for p in train:
            sc = load_scenario(p)
            for v in rule.held_out:
                assert not any(_states(t, v) for t in _texts(sc)), (p.name, v.value)
                comments = "\n".join(line for line in p.read_text().splitlines() if line.startswith("#"))
                assert v.value not in comments and not _states(comments, v)
                if v.scale is not None:
                    assert all(abs(m.scale - v.scale) > 1e-9 for t in sc.triggers for m in t.compute.values())
            taken.append(next(v.value for v in rule.train if _states(sc.context, v)))
        # K = 2 x the training values: each taken twice, in a seeded order
        assert sorted(taken) == sorted(2 * [v.value for v in rule.train])
        for p, v in zip(held, rule.held_out):
            assert _states(load_scenario(p).context, v) and "held out of training" in load_scenario(p).description


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_paraphrases_keep_every_placeholder_and_state_the_rule_where_the_text_does(scenario):
    spec = V.load_spec(scenario)
    for where, original in spec.originals.items():
        paras = spec.events[int(where[7:-1])] if where.startswith("events[") else spec.triggers[where.split(".", 1)[1]]
        assert 2 <= len(paras) <= 3 and len(set(paras)) == len(paras) and original not in paras
        states_rule = spec.rule is not None and _states(original, spec.rule.shipped)
        for para in paras:
            assert sorted(V.fields_of(para)) == sorted(V.fields_of(original)), (where, para)
            assert bool(V.MARKER.search(para)) == states_rule, (where, para)
            for value in (spec.rule.values if spec.rule else [None]):
                rendered = V.render(para, value)
                assert "[[" not in rendered and sorted(V.fields_of(rendered)) == sorted(V.fields_of(original))
                if states_rule:
                    assert _states(rendered, value)


def test_stale_paraphrases_are_refused(tmp_path):
    raw = V.PARAPHRASES.read_text()
    stale = tmp_path / "stale.yaml"
    stale.write_text(raw.replace("Don't be a guinea pig.\"\n", "Do not be a guinea pig.\"\n", 1))
    with pytest.raises(ConfigError, match="shipped text"):
        V.load_spec("vaccine_campaign", stale)
    lost = tmp_path / "lost.yaml"
    lost.write_text(raw.replace("(2/3 of the average) was {winning:.1f}.\"\n      paraphrases:\n        - \"Results of round {round}",
                                "(2/3 of the average) was {winning:.1f}.\"\n      paraphrases:\n        - \"Results of round", 1))
    with pytest.raises(ConfigError, match="placeholders"):
        V.load_spec("guessing_game", lost)
    data = read_yaml(V.PARAPHRASES)
    assert set(SCENARIOS) <= set(data)


def test_a_changed_variant_file_is_refused_unless_overwritten(tmp_path, capsys):
    assert V.main(["--scenario", "product_adoption", "--variants", "1", "--out", str(tmp_path), "--held_out", "false"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == tmp_path / "product_adoption_v1.yaml"
    good = path.read_text()
    V.write_variants("product_adoption", tmp_path, 1, seed=0, held_out=False)  # the same content: kept
    path.write_text(good.replace("ticks: 8", "ticks: 7"))
    with pytest.raises(UsageError, match="other content"):
        V.write_variants("product_adoption", tmp_path, 1, seed=0, held_out=False)
    V.write_variants("product_adoption", tmp_path, 1, seed=0, held_out=False, overwrite=True)
    assert path.read_text() == good

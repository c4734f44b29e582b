"""Scenario variants for the variants corpus (docs/teacher.md#the-variants-corpus).

    python -m lsm.data_gen.corpus.variants --scenario guessing_game --variants 3 --out DIR

A variant is an ordinary scenario YAML (same `name`, actions and schedule as the shipped
scenario: the student matches scenarios by their action space) in which
  (a) every event's valence and credibility are drawn anew (`jitter_events`, the recovery
      experiment's jitter, with `keep_sign=True`: see `KEEP_SIGN`);
  (b) every event text (scheduled and triggered) is one of its hand-written paraphrases in
      `paraphrases.yaml`, drawn per event;
  (c) the scenario's rule-like parameter, where it has one (the guessing game's p, the vaccine's
      price, the Zap discount), takes one of the values `paraphrases.yaml` defines: the training
      variants take the training values, and one more variant per held-out value is written for
      evaluation (`held_out=True`), never mixed into the training variants.
All draws are keyed by the corpus seed, the scenario and the variant (`Stream.SCENARIO_VARIANT`):
the same arguments write the same files. What was varied is written in a comment at the top of
each file and appended to its `description`.
"""
from __future__ import annotations

import argparse
import copy
import re
import string
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lsm.config import ConfigError, Problem, UsageError, read_yaml, resolve_config
from lsm.society import seeds
from lsm.society.scenario import scenario_from_dict
from lsm.society.variants import jitter_events

PARAPHRASES = Path(__file__).with_name("paraphrases.yaml")
"""The one definition of the paraphrases, the rule values and the held-out values."""
KEEP_SIGN = True
"""Variants keep each event's sign of valence (|valence| drawn in 0..1). The teacher is an LLM
that reads the event's text (and source), not its valence: a drawn sign would label a
pro-vaccine text as against the target behaviour in half the variants, so the valence feature
would contradict what the teacher reacts to. With the sign kept, valence and text agree, and
what the jitter breaks is the one-to-one tie between an event's text and its exact valence and
credibility numbers (which otherwise work as an event identifier)."""
TRAIN, HELD_OUT = 0, 1
"""Kinds of variant (a key of their draws)."""
TEXTS, JITTER = 0, 1
"""The parts of one variant's draws: its paraphrase choices, its `jitter_events` seed."""
RULE_ORDER = 2
"""The key of the order in which training variants take the rule's training values."""
MARKER = re.compile(r"\[\[(\w+)\]\]")
"""A rule phrase in a text of `paraphrases.yaml`: `[[words]]` -> `two thirds`."""
RULE_TEXTS = ("context", "question", "description")
"""The scenario fields a rule may rewrite; `context` and `description` must give the shipped
text back with the shipped value (a check that they are faithful); the `question` may state the
rule where the shipped question does not."""


@dataclass(frozen=True)
class RuleValue:
    id: str
    """Short identifier (file names)."""
    value: str
    """The value as written, e.g. `3/4`, `$20`, `10%`."""
    phrases: dict[str, str]
    """What each [[marker]] becomes."""
    scale: float | None = None
    """The number a trigger computes with (the guessing game's `scale`), if any."""


@dataclass(frozen=True)
class Rule:
    name: str
    what: str
    values: tuple[RuleValue, ...]
    shipped: RuleValue
    held_out: tuple[RuleValue, ...]
    scale_at: tuple[str, str] | None
    """(trigger name, compute key) whose `scale` is the value's `scale`."""
    texts: dict[str, str]
    """Scenario fields (`RULE_TEXTS`) written with [[markers]]."""

    @property
    def train(self) -> tuple[RuleValue, ...]:
        """The values training variants take (every value not held out)."""
        return tuple(v for v in self.values if v not in self.held_out)


@dataclass(frozen=True)
class Spec:
    """One scenario's entry of `paraphrases.yaml`, checked against the shipped scenario."""

    scenario: str
    path: Path
    """The shipped scenario file."""
    rule: Rule | None
    events: tuple[tuple[str, ...], ...]
    """The paraphrases of each scheduled event, in the scenario's order."""
    triggers: dict[str, tuple[str, ...]]
    """The paraphrases of each trigger's event text, by trigger name."""
    originals: dict[str, str]
    """The shipped texts: `events[i]` and `triggers.NAME`."""


@dataclass(frozen=True)
class Variant:
    """One file of a scenario's variants: what it is and what it takes."""

    file: str
    kind: int
    """`TRAIN` or `HELD_OUT`."""
    index: int
    """Train: 1..K; held out: the value's position in the rule's values."""
    value: RuleValue | None


def fields_of(text: str) -> list[tuple[str, str]]:
    """The {placeholders} of a format string with their format specs, in order."""
    return [(f, spec or "") for _, f, spec, _ in string.Formatter().parse(text) if f is not None]


def render(text: str, value: RuleValue | None) -> str:
    """`text` with its [[markers]] replaced by `value`'s phrases."""
    if value is None:
        return text
    return MARKER.sub(lambda m: value.phrases[m.group(1)], text)


def _norm(text: str) -> str:
    return " ".join(str(text).split())


def load_spec(scenario: str, path: str | Path = PARAPHRASES) -> Spec:
    """The entry of `scenario` (a shipped scenario name) in `paraphrases.yaml`, checked against
    the shipped scenario: same events and trigger texts, 2 or more paraphrases each, every
    paraphrase with the placeholders of its text, rule markers only where the rule has phrases
    for them; the rule's texts giving the shipped ones back with the shipped value."""
    raw = read_yaml(path, kind="paraphrases file")
    if scenario not in raw:
        raise UsageError(f"--scenario {scenario}: no paraphrases in {path} (there are: {', '.join(raw)})")
    entry = raw[scenario]
    sc_path = resolve_config(scenario, "scenarios")
    shipped = read_yaml(sc_path, kind="scenario")
    problems: list[Problem] = []
    src = f"{scenario}"
    if shipped.get("name") != scenario:
        problems.append(Problem(f"{src}", shipped.get("name"), f"the shipped scenario {sc_path} to be named {scenario}"))

    rule = None
    if entry.get("rule"):
        r = entry["rule"]
        values = tuple(RuleValue(v["id"], str(v["value"]), {k: str(x) for k, x in v.items() if k not in ("id", "value", "scale")},
                                 float(v["scale"]) if "scale" in v else None) for v in r["values"])
        by_value = {v.value: v for v in values}
        keys = {frozenset(v.phrases) for v in values}
        if len(keys) != 1:
            problems.append(Problem(f"{src}.rule.values", [sorted(v.phrases) for v in values], "the same phrases for every value"))
        if len(by_value) != len(values) or len({v.id for v in values}) != len(values):
            problems.append(Problem(f"{src}.rule.values", [v.value for v in values], "distinct values and ids"))
        if str(r["shipped"]) not in by_value:
            problems.append(Problem(f"{src}.rule.shipped", r["shipped"], f"one of the values {list(by_value)}"))
        missing = [h for h in r.get("held_out", []) if str(h) not in by_value]
        if missing:
            problems.append(Problem(f"{src}.rule.held_out", missing, f"values among {list(by_value)}"))
        if problems:
            raise ConfigError(path, problems, "paraphrases file")
        held = tuple(by_value[str(h)] for h in r.get("held_out", []))
        scale_at = (r["scale"]["trigger"], r["scale"]["compute"]) if r.get("scale") else None
        rule = Rule(r["name"], r.get("what", ""), values, by_value[str(r["shipped"])], held, scale_at,
                    {k: r[k] for k in RULE_TEXTS if k in r})
        if rule.shipped in held:
            problems.append(Problem(f"{src}.rule.held_out", r["shipped"], "not the shipped value (the reference corpus trains on it)"))
        if not rule.train:
            problems.append(Problem(f"{src}.rule.held_out", r["held_out"], "at least one value left for training"))
        for k, tpl in rule.texts.items():
            if k != "question" and _norm(render(tpl, rule.shipped)) != _norm(shipped.get(k, "")):
                problems.append(Problem(f"{src}.rule.{k}", _norm(render(tpl, rule.shipped)),
                                        f"the shipped {k} with the shipped value ({_norm(shipped.get(k, ''))!r})"))
        if scale_at is not None:
            trig = next((t for t in shipped.get("triggers", []) if t.get("name") == scale_at[0]), None)
            m = (trig or {}).get("compute", {}).get(scale_at[1])
            if m is None:
                problems.append(Problem(f"{src}.rule.scale", list(scale_at), "a trigger's compute of the scenario"))
            elif rule.shipped.scale is None or abs(float(m.get("scale", 1.0)) - rule.shipped.scale) > 1e-6:
                problems.append(Problem(f"{src}.rule.scale", m.get("scale", 1.0), f"the shipped value's scale ({rule.shipped.scale})"))
            if any(v.scale is None for v in values):
                problems.append(Problem(f"{src}.rule.values", [v.value for v in values if v.scale is None], "a scale for every value"))

    originals: dict[str, str] = {}
    events: list[tuple[str, ...]] = []
    sev, pev = shipped.get("events", []), entry.get("events", [])
    if len(sev) != len(pev):
        problems.append(Problem(f"{src}.events", f"{len(pev)} events", f"one entry per scheduled event of {sc_path} ({len(sev)})"))
    for i, (s, p) in enumerate(zip(sev, pev)):
        originals[f"events[{i}]"] = s["text"]
        if p["text"] != s["text"]:
            problems.append(Problem(f"{src}.events[{i}].text", p["text"], f"the shipped text {s['text']!r}"))
        events.append(tuple(p["paraphrases"]))
    triggers: dict[str, tuple[str, ...]] = {}
    strig = {t["name"]: t["event"]["text"] for t in shipped.get("triggers", []) if isinstance(t.get("event"), dict)}
    ptrig = entry.get("triggers", {}) or {}
    if set(strig) != set(ptrig):
        problems.append(Problem(f"{src}.triggers", sorted(ptrig), f"one entry per trigger of {sc_path} ({sorted(strig)})"))
    for name, text in strig.items():
        if name not in ptrig:
            continue
        originals[f"triggers.{name}"] = text
        if ptrig[name]["text"] != text:
            problems.append(Problem(f"{src}.triggers.{name}.text", ptrig[name]["text"], f"the shipped text {text!r}"))
        triggers[name] = tuple(ptrig[name]["paraphrases"])
    texts = [(f"events[{i}]", p) for i, p in enumerate(events)] + [(f"triggers.{n}", p) for n, p in triggers.items()]
    phrase_keys = set(rule.shipped.phrases) if rule else set()
    for where, paras in texts:
        if len(paras) < 2:
            problems.append(Problem(f"{src}.{where}.paraphrases", len(paras), "at least 2 paraphrases"))
        for j, para in enumerate(paras):
            if sorted(fields_of(para)) != sorted(fields_of(originals[where])):  # in any order
                problems.append(Problem(f"{src}.{where}.paraphrases[{j}]", para, f"the placeholders of the shipped text {fields_of(originals[where])}"))
            unknown = set(MARKER.findall(para)) - phrase_keys
            if unknown:
                problems.append(Problem(f"{src}.{where}.paraphrases[{j}]", sorted(unknown), f"rule markers among {sorted(phrase_keys)}"))
    if problems:
        raise ConfigError(path, problems, "paraphrases file")
    return Spec(scenario, sc_path, rule, tuple(events), triggers, originals)


def plan(spec: Spec, n_variants: int, seed: int, held_out: bool = True) -> list[Variant]:
    """The files of `n_variants` training variants (and, with `held_out`, one per held-out rule
    value): training variant k (1..K) takes the rule's training values in a seeded order, each
    once before any repeats."""
    if n_variants < 0:
        raise UsageError(f"--variants {n_variants}: a number of variants >= 0")
    out: list[Variant] = []
    rule = spec.rule
    order = seeds.rng(seed, seeds.Stream.SCENARIO_VARIANT, _scenario_key(spec.scenario), RULE_ORDER).permutation(len(rule.train)) \
        if rule else None
    for k in range(1, n_variants + 1):
        value = rule.train[int(order[(k - 1) % len(order)])] if rule else None  # type: ignore[index]
        out.append(Variant(f"{spec.scenario}_v{k}.yaml", TRAIN, k, value))
    if held_out and rule:
        for v in rule.held_out:
            out.append(Variant(f"{spec.scenario}_heldout_{v.id}.yaml", HELD_OUT, rule.values.index(v), v))
    return out


def _scenario_key(scenario: str) -> int:
    """The scenario's key of its variants' draws (variant k of two scenarios draws apart)."""
    return zlib.crc32(scenario.encode())


def build_variant(spec: Spec, variant: Variant, seed: int) -> tuple[dict[str, Any], str]:
    """The variant's scenario data (validated) and the comment that heads its file."""

    data = copy.deepcopy(read_yaml(spec.path, kind="scenario"))
    keys = (_scenario_key(spec.scenario), variant.kind, variant.index)
    g = seeds.rng(seed, seeds.Stream.SCENARIO_VARIANT, *keys, TEXTS)
    value, rule = variant.value, spec.rule
    picks: list[str] = []
    for i, ev in enumerate(data.get("events", [])):
        k = int(g.integers(len(spec.events[i])))
        ev["text"] = render(spec.events[i][k], value)
        picks.append(f"events[{i}] {k + 1}/{len(spec.events[i])}")
    for trig in data.get("triggers", []):
        if isinstance(trig.get("event"), dict):
            paras = spec.triggers[trig["name"]]
            k = int(g.integers(len(paras)))
            trig["event"]["text"] = render(paras[k], value)
            picks.append(f"trigger {trig['name']} {k + 1}/{len(paras)}")
    if rule is not None and value is not None:
        for field_name, tpl in rule.texts.items():
            data[field_name] = _norm(render(tpl, value))
        if rule.scale_at is not None:
            trig = next(t for t in data["triggers"] if t["name"] == rule.scale_at[0])
            trig["compute"][rule.scale_at[1]]["scale"] = value.scale
    jitter_seed = seeds.int_seed(seed, seeds.Stream.SCENARIO_VARIANT, *keys, JITTER, bits=31)
    jitter_events(data, jitter_seed, keep_sign=KEEP_SIGN)

    label = f"training variant {variant.index}" if variant.kind == TRAIN else f"held-out variant {variant.value.id}"  # type: ignore[union-attr]
    if rule is not None and value is not None:
        role = "held out of training" if variant.kind == HELD_OUT else "a training value"
        rule_line = f"{rule.name} = {value.value} ({role}; shipped: {rule.shipped.value})"
        rule_note = f"{rule.name} = {value.value} ({role})"
    else:
        rule_line = rule_note = "no rule-like parameter to vary"
    sign = "sign kept" if KEEP_SIGN else "sign drawn"
    data["description"] = (f"{_norm(data.get('description', ''))} [{label}, corpus seed {seed}: {rule_note}; "
                           f"every event's valence and credibility jittered ({sign}, jitter seed {jitter_seed}); "
                           f"event texts paraphrased.]").strip()
    header = "\n".join([
        f"# {spec.scenario}, {label} of the variants corpus: written by data_gen/corpus/variants.py",
        f"# (corpus seed {seed}) from {spec.path.name} and data_gen/corpus/paraphrases.yaml. Varied:",
        f"#   rule: {rule_line}" + (f" ({rule.what})" if rule else ""),
        f"#   valence and credibility of every event: jitter_events(seed={jitter_seed}, keep_sign={KEEP_SIGN})",
        "#   event texts, paraphrase drawn: " + "; ".join(picks),
        ""])
    scenario_from_dict(data, source=f"{spec.scenario} {label}")  # raises ScenarioError if anything is off
    return data, header


def write_variants(scenario_name: str, out_dir: str | Path, n_variants: int, seed: int, held_out: bool = True,
                   overwrite: bool = False) -> list[Path]:
    """Write `n_variants` training variants of the shipped scenario `scenario_name` to `out_dir`
    (`<name>_v<k>.yaml`) and, with `held_out`, one variant per held-out rule value
    (`<name>_heldout_<id>.yaml`); return their paths (training variants first). Deterministic in
    (`scenario_name`, `seed`, `paraphrases.yaml`). A file already there with the same content is
    kept; with other content (the paraphrases or the scenario changed since) it is refused,
    unless `overwrite`: a finished trace must keep the scenario it was generated on."""
    spec = load_spec(scenario_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for variant in plan(spec, n_variants, seed, held_out):
        data, header = build_variant(spec, variant, seed)
        text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
        path = out / variant.file
        if path.exists() and path.read_text(encoding="utf-8") != text and not overwrite:
            raise UsageError(f"{path} exists with other content (paraphrases.yaml or the scenario changed since it was "
                             "written): remove it (and its trace), or pass --overwrite true")
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"true or false, not {text!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lsm.data_gen.corpus.variants", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", required=True, help="a shipped scenario with paraphrases (guessing_game, vaccine_campaign, product_adoption)")
    ap.add_argument("--variants", type=int, default=3, help="training variants K (default 3)")
    ap.add_argument("--out", required=True, help="folder of the variant YAMLs")
    ap.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    ap.add_argument("--held_out", type=_bool, default=True, help="also one variant per held-out rule value (default true)")
    ap.add_argument("--overwrite", type=_bool, default=False, help="replace variant files with other content (default false)")
    args = ap.parse_args(argv)
    try:
        paths = write_variants(args.scenario, args.out, args.variants, args.seed, args.held_out, args.overwrite)
    except (ConfigError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())

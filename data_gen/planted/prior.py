"""Random planted societies: configuration k of a documented prior (`lsm recovery --planted random:K`).

One planted configuration (`config.py`) is one answer the student may happen to fit; scoring it
over configurations drawn at random tells whether it recovers mechanisms in general.
`draw_planted(k, seed, ...)` is configuration k of the prior below, named `random_<seed>_<k>`;
it is built through `from_dict(PlantedConfig, ...)` (every check of the schema holds) and
`write_planted` saves it as YAML that `load_config(PlantedConfig, path)` reads back equal.

The prior. U(a, b): uniform on [a, b]; every drawn number is rounded to 3 decimals. Each part is
drawn from its own generator, `seeds.rng(seed, Stream.PLANTED_PRIOR, k, part)` (the identity
part: one per attribute, `(k, 6, i)`), so a part's draws do not depend on the world or the
scenario the other parts were drawn for.

    part 0  influence β_type, one per tie type (`EDGE_TYPES`): five magnitudes, log-uniform in
            0.2 .. 2 with neighbouring magnitudes at least a factor 1.25 apart -- log β_(i) =
            log 0.2 + i · log 1.25 + u_(i), i = 0..4, u_(0) ≤ ... ≤ u_(4) the sorted draws of five
            U(0, log 10 − 4 log 1.25) (the uniform order statistics conditioned on that spacing) --
            given to the tie types in a random order (a uniform permutation: the strongest first),
            so every rank order of the tie types is equally likely and no two are near-ties.
    part 1  conformity: with probability 0.2 none (m_i = 1 for everyone); otherwise the attribute
            is drawn uniformly among the world's categorical attributes with 2 to 6 categories
            (sorted by name), and m by category is evenly spaced from lo ~ U(0.5, 0.9) to
            hi ~ U(1.2, 1.6) along its categories as the world lists them (conformity increasing)
            or in reverse (decreasing), each direction with probability 1/2. (The five draws are
            made whichever the outcome.)
    part 2  persistence ~ U(0, 1.5).
    part 3  events: γ (`valence_credibility`) ~ U(0.4, 1.5); `source_type[s]` ~ U(-0.3, 0.3) for
            every source type of the scenario schema (`SOURCE_TYPES`, in order), then
            `framing[f]` ~ U(-0.3, 0.3) for every framing (`FRAMINGS`).
    part 4  channel loadings, per channel of the scenario in order: a sign, + or − with
            probability 1/2, then a magnitude ~ U(0.2, 1.0).
    part 5  standard deviations: `agent_sd` ~ U(0.2, 0.8), `noise_sd` ~ U(0.1, 0.5),
            `channel_agent_sd` ~ U(0.1, 0.5), `channel_noise_sd` ~ U(0.1, 0.3), in that order.
    part 6  identity: for each of party, education and area (i = 0, 1, 2) that the world has,
            every category's effect ~ U(-0.5, 0.5); the effect of age (numeric, rescaled to
            -1..1; i = 3) ~ U(-0.3, 0.3) where the world has age.
    part 7  action biases, for the scenario's action labels (a numeric scenario's bins): one
            action, uniform among them, is rare: bias ~ U(-3.5, -2.5); every other ~ U(-0.5, 0.5)
            (drawn: the rare action's index, then A biases in U(-0.5, 0.5), then the rare bias).

Everything else -- the neighbour rule, `dose`, `scale`, `stance_sd`, `action_lean`,
`channel_bias`, `default_loading`, `channel_spread` and the embedding settings -- is `base`'s
(default: the shipped `configs/teacher/planted.yaml`). The attributes and their categories are
the world's (`population_attributes`: a world file, or a population config sampled), the
actions and channels the scenario's (`scenario_labels`), so `PlantedSociety` accepts the
configuration on that world and scenario. Same (seed, k, attributes, scenario, base): the same
configuration.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lsm.config import UsageError, from_dict, load_config, resolve_config, to_dict, to_yaml
from lsm.data_gen.planted.config import PlantedConfig
from lsm.society import seeds
from lsm.society.scenario import DEFAULT_CHANNELS, FRAMINGS, SOURCE_TYPES, load_scenario
from lsm.society.world import load_world
from lsm.society.world.graph import EDGE_TYPES
from lsm.society.world.population import load_population_config, sample_population

INFLUENCE_RANGE = (0.2, 2.0)
INFLUENCE_MIN_RATIO = 1.25
"""Neighbouring influence magnitudes differ by at least this factor (the rank order is identifiable)."""
NO_CONFORMITY = 0.2
CONFORMITY_CATEGORIES = (2, 6)
CONFORMITY_LOW, CONFORMITY_HIGH = (0.5, 0.9), (1.2, 1.6)
PERSISTENCE = (0.0, 1.5)
GAMMA = (0.4, 1.5)
EVENT_EXTRA = 0.3
LOADING = (0.2, 1.0)
SDS = {"agent_sd": (0.2, 0.8), "noise_sd": (0.1, 0.5), "channel_agent_sd": (0.1, 0.5), "channel_noise_sd": (0.1, 0.3)}
IDENTITY_ATTRIBUTES = ("party", "education", "area")
IDENTITY_EFFECT = 0.5
AGE_EFFECT = 0.3
RARE_BIAS = (-3.5, -2.5)
OTHER_BIAS = 0.5
PARTS = {"influence": 0, "conformity": 1, "persistence": 2, "events": 3, "channels": 4, "sds": 5, "identity": 6,
         "actions": 7}
"""The prior's parts and their keys (`seeds.rng(seed, Stream.PLANTED_PRIOR, k, part)`)."""

DEFAULT_POPULATION = "anes96"
"""The population `make_world` (and so `lsm recovery`) builds by default."""
DEFAULT_SCENARIO = "vaccine_campaign"
MAX_RANDOM_CONFIGS = 100
"""At most this many configurations in one `random:K` (each is a whole recovery experiment)."""

_SPEC = re.compile(r"random:(\d+)(?:@(\d+))?")


class RandomSpec(NamedTuple):
    """`random:K@SEED`: configurations 0..K-1 of the prior drawn with `seed`."""

    configs: int
    seed: int


def parse_random(spec: str) -> RandomSpec | None:
    """`random:K` or `random:K@SEED` as a `RandomSpec` (seed 0 unless given); None for any other
    value (a planted config's path or shipped name). A value starting with `random` that is
    neither a well-formed spec nor an existing file is a `UsageError`."""
    if not str(spec).lower().startswith("random") or resolve_config(spec, "teacher").is_file():
        return None
    m = _SPEC.fullmatch(str(spec))
    count = int(m.group(1)) if m else 0
    seed = int(m.group(2)) if m and m.group(2) else 0
    if m is None or not 1 <= count <= MAX_RANDOM_CONFIGS or seed >= 2**63:
        raise UsageError(f"--planted {spec!r}: expected random:K or random:K@SEED, with K the number of planted "
                         f"configurations drawn from the prior (1 to {MAX_RANDOM_CONFIGS}) and SEED the prior's seed "
                         "(a non-negative integer, 0 unless given), e.g. random:8 or random:8@1; or a planted "
                         "config's path or shipped name (e.g. planted).")
    return RandomSpec(count, seed)


def population_attributes(source: str | Path = DEFAULT_POPULATION) -> tuple[dict[str, list[str]], list[str]]:
    """(categories by categorical attribute, numeric attribute names) of a world: a world or trace
    file (`.h5`), or a population config (a path or a shipped name), of which a few agents are
    sampled (the categories are the config's, or the survey's for `source: anes96`)."""
    if Path(source).suffix == ".h5":
        pop = load_world(source).population
    else:
        path = resolve_config(source, "population")
        pop = sample_population(load_population_config(path), 20, 0, source_file=str(path))
    return {a: [str(c) for c in pop.categories[a]] for a in pop.categorical}, [str(a) for a in pop.numeric]


def scenario_labels(scenario: str | Path = DEFAULT_SCENARIO) -> tuple[list[str], list[str]]:
    """(action labels, channel names) of a scenario (a path or a shipped name)."""
    sc = load_scenario(resolve_config(scenario, "scenarios"))
    return list(sc.actions.labels), list(sc.channel_names)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return round(float(rng.uniform(lo, hi)), 3)


def draw_planted(k: int, seed: int = 0, base: PlantedConfig | None = None, *,
                 categories: dict[str, list[str]] | None = None, numeric: list[str] | None = None,
                 actions: list[str] | None = None, channels: list[str] | None = None) -> PlantedConfig:
    """Configuration `k` of the prior (module docstring) drawn with `seed`, named `random_<seed>_<k>`.

    `categories` / `numeric`: the world's attributes (default: `population_attributes()`, the
    default world's population); `actions` / `channels`: the scenario's labels (default: the
    vaccine campaign's actions, the default channels); `base`: the fields not drawn (default:
    the shipped `planted.yaml`)."""
    if k < 0 or seed < 0:
        raise ValueError(f"configuration k and seed are non-negative integers, not k={k}, seed={seed}")
    if categories is None or numeric is None:
        cats, nums = population_attributes()
        categories = cats if categories is None else categories
        numeric = nums if numeric is None else numeric
    if actions is None:
        actions, _ = scenario_labels()
    if channels is None:
        channels = [c for c, _ in DEFAULT_CHANNELS]
    if base is None:
        base = load_config(PlantedConfig, resolve_config("planted", "teacher"), kind="planted society config")

    def part(name: str, *keys: int) -> np.random.Generator:
        return seeds.rng(seed, seeds.Stream.PLANTED_PRIOR, k, PARTS[name], *keys)

    data: dict[str, Any] = to_dict(base)
    data["name"] = f"random_{seed}_{k}"

    rng = part("influence")
    n = len(EDGE_TYPES)
    lo, hi = INFLUENCE_RANGE
    span = math.log(hi / lo) - (n - 1) * math.log(INFLUENCE_MIN_RATIO)
    u = np.sort(rng.uniform(0.0, span, n))
    magnitudes = np.exp(math.log(lo) + u + np.arange(n) * math.log(INFLUENCE_MIN_RATIO))[::-1]  # strongest first
    ranked = [EDGE_TYPES[j] for j in rng.permutation(n)]  # strongest first
    strength = dict(zip(ranked, magnitudes))
    data["influence"] = {t: round(float(strength[t]), 3) for t in EDGE_TYPES}

    rng = part("conformity")
    eligible = sorted(a for a, c in categories.items() if CONFORMITY_CATEGORIES[0] <= len(c) <= CONFORMITY_CATEGORIES[1])
    none, pick = rng.random(), rng.random()
    low, high = _u(rng, *CONFORMITY_LOW), _u(rng, *CONFORMITY_HIGH)
    increasing = bool(rng.random() < 0.5)
    if eligible and none >= NO_CONFORMITY:
        attr = eligible[min(int(pick * len(eligible)), len(eligible) - 1)]
        levels = categories[attr]
        m = np.linspace(low, high, len(levels))
        data["conformity_attribute"] = attr
        data["conformity"] = {c: round(float(v), 3) for c, v in zip(levels, m if increasing else m[::-1])}
    else:
        data["conformity_attribute"], data["conformity"] = None, {}

    data["persistence"] = _u(part("persistence"), *PERSISTENCE)

    rng = part("events")
    data["events"] = {"valence_credibility": _u(rng, *GAMMA),
                      "source_type": {s: _u(rng, -EVENT_EXTRA, EVENT_EXTRA) for s in SOURCE_TYPES},
                      "framing": {f: _u(rng, -EVENT_EXTRA, EVENT_EXTRA) for f in FRAMINGS}}

    rng = part("channels")
    loading = {}
    for c in channels:
        sign = 1.0 if rng.random() < 0.5 else -1.0
        loading[c] = sign * _u(rng, *LOADING)
    data["channel_loading"] = loading

    rng = part("sds")
    data.update({name: _u(rng, *bounds) for name, bounds in SDS.items()})

    identity = {}
    for i, attr in enumerate(IDENTITY_ATTRIBUTES):
        if attr in categories:
            rng = part("identity", i)
            identity[attr] = {c: _u(rng, -IDENTITY_EFFECT, IDENTITY_EFFECT) for c in categories[attr]}
    data["identity"] = identity
    data["identity_numeric"] = ({"age": _u(part("identity", len(IDENTITY_ATTRIBUTES)), -AGE_EFFECT, AGE_EFFECT)}
                                if "age" in numeric else {})

    rng = part("actions")
    rare = int(rng.integers(len(actions))) if actions else 0
    bias = {a: _u(rng, -OTHER_BIAS, OTHER_BIAS) for a in actions}
    if actions:
        bias[actions[rare]] = _u(rng, *RARE_BIAS)
    data["action_bias"] = bias

    return from_dict(PlantedConfig, data, source=f"random planted configuration {k} (prior seed {seed})",
                     kind="planted society config")


def influence_order(cfg: PlantedConfig) -> tuple[str, ...]:
    """The tie types from the strongest influence to the weakest."""
    return tuple(sorted(cfg.influence, key=lambda t: -cfg.influence[t]))


def write_planted(cfg: PlantedConfig, path: str | Path) -> Path:
    """Save `cfg` as a planted config YAML (written under a temporary name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"# {cfg.name}: a planted configuration drawn from the prior (lsm.data_gen.planted.prior).\n"
                   + to_yaml(cfg))
    tmp.replace(path)
    return path

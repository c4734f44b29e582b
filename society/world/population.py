"""Synthetic populations: N agents with static identities, sampled with a seed.

Two sources, one sampler:
  * `source: marginals` — every attribute from the YAML's marginal distributions;
  * `source: anes96`    — rows of the ANES 1996 survey resampled to N (`anes96.py`), plus any
    attribute the survey lacks sampled from the YAML (marked `synthetic` in the vocabulary).

Dependence between attributes uses a Gaussian copula: each attribute has a latent standard
normal score; `correlations` set pairwise latent correlations; an attribute's value is its
marginal's inverse CDF at Φ(latent) (ordered categories are quantile bins in listed order).
Survey attributes enter with their observed normal scores and the synthetic ones are drawn
from the conditional Gaussian given them, so "openness correlates with liberal ideology"
holds for survey rows too. `given:`/`table:` makes a categorical conditional on another.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal

import numpy as np
from scipy import special, stats

from lsm.config import Checked, ConfigError, Problem, load_config
from lsm.limits import (
    MAX_ATTRIBUTES,
    MAX_CATEGORIES,
    MAX_CONTEXT_CHARS,
    MAX_LABEL_CHARS,
    MAX_NAME_CHARS,
    label_problem,
    name_problem,
)
from lsm.society import seeds
from lsm.society.world.anes96 import ANES_ATTRIBUTES, ANES_CATEGORIES, resample_anes96
from lsm.society.world.persona import make_names, make_personas


# --------------------------------------------------------------------------- config schema
@dataclass
class AttributeSpec(Checked):
    """One attribute's marginal distribution."""

    type: Literal["categorical", "numeric"]
    """`categorical` (named categories) or `numeric` (a number in [min, max])."""
    description: str = ""
    """What the attribute means (shown in summaries and the identity vocabulary)."""
    categories: dict[str, float] | list[str] | None = None
    """categorical: category -> proportion (normalised), or just the names when `given` is
    set. Listed order is the ordinal order used by correlations."""
    given: str | None = None
    """categorical: name of another categorical attribute this one is conditional on."""
    table: dict[str, dict[str, float]] | None = None
    """categorical with `given`: parent category -> proportions over `categories`."""
    dist: Literal["normal", "uniform", "lognormal", "beta"] | None = None
    """numeric: the marginal family."""
    min: float | None = None
    """numeric: lower bound (values are clipped; also the normalisation range)."""
    max: float | None = None
    """numeric: upper bound."""
    mean: float | None = None
    """normal: mean."""
    std: float | None = None
    """normal: standard deviation."""
    median: float | None = None
    """lognormal: median."""
    sigma: float | None = None
    """lognormal: standard deviation of log(value)."""
    a: float | None = None
    """beta: first shape parameter (scaled to [min, max])."""
    b: float | None = None
    """beta: second shape parameter."""
    integer: bool = False
    """numeric: round to whole numbers."""

    @property
    def category_names(self) -> list[str]:
        return list(self.categories or [])

    @property
    def proportions(self) -> np.ndarray:
        if isinstance(self.categories, dict):
            return np.array(list(self.categories.values()), dtype=np.float64)
        return np.ones(len(self.category_names))

    text_limits: ClassVar[dict[str, int]] = {"description": MAX_LABEL_CHARS, "given": MAX_NAME_CHARS}

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if len(self.category_names) > MAX_CATEGORIES:
            yield "categories", f"{len(self.category_names):,} categories", f"at most {MAX_CATEGORIES:,} categories"
            return
        for cat in self.category_names:
            if not isinstance(cat, str):
                yield f"categories.{cat}", cat, "a category name (a string; quote numbers)"
            elif bad := label_problem(cat, MAX_LABEL_CHARS):
                yield f"categories.{cat}", cat, bad
        if self.type == "categorical":
            if not self.categories:
                yield "categories", self.categories, "a non-empty mapping of category -> proportion"
            elif isinstance(self.categories, dict) and self.given is None:
                for name, p in self.categories.items():
                    if p < 0:
                        yield f"categories.{name}", p, "a proportion >= 0"
                if sum(self.categories.values()) <= 0:
                    yield "categories", self.categories, "proportions with a positive sum"
            if (self.given is None) != (self.table is None):
                yield "table" if self.table is None else "given", None, "`given` and `table` together"
            if self.table and self.categories:
                for parent, row in self.table.items():
                    for cat, p in row.items():
                        if cat not in self.category_names:
                            yield f"table.{parent}.{cat}", p, f"a category among {self.category_names}"
                        elif p < 0:
                            yield f"table.{parent}.{cat}", p, "a proportion >= 0"
                    if sum(row.values()) <= 0:
                        yield f"table.{parent}", row, "proportions with a positive sum"
            if self.dist is not None:
                yield "dist", self.dist, "no `dist` on a categorical attribute"
            return
        # numeric
        if self.dist is None:
            yield "dist", None, "one of 'normal', 'uniform', 'lognormal', 'beta'"
            return
        if self.min is None or self.max is None:
            yield "min" if self.min is None else "max", None, "numeric bounds `min` and `max`"
        elif self.min >= self.max:
            yield "max", self.max, f"a value greater than min ({self.min})"
        needs = {"normal": ("mean", "std"), "lognormal": ("median", "sigma"), "beta": ("a", "b"), "uniform": ()}
        for name in needs[self.dist]:
            value = getattr(self, name)
            if value is None:
                yield name, None, f"a number (required by dist '{self.dist}')"
            elif name in ("std", "sigma", "a", "b", "median") and value <= 0:
                yield name, value, "a positive number"
        if self.categories is not None:
            yield "categories", self.categories, "no categories on a numeric attribute"


@dataclass
class Correlation(Checked):
    """Latent (Gaussian-copula) correlation between two attributes."""

    between: list[str]
    """The two attribute names."""
    rho: float
    """Correlation in (-1, 1). Negative: high values of the first go with low of the second
    (for ordered categories: with earlier-listed categories)."""

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if len(self.between) != 2 or self.between[0] == self.between[1]:
            yield "between", self.between, "two different attribute names"
        if not -1 < self.rho < 1:
            yield "rho", self.rho, "a number strictly between -1 and 1"


@dataclass
class PopulationConfig(Checked):
    """A population: where identities come from and how they are distributed."""

    name: str
    """Short name, recorded in every file built from it."""
    source: Literal["marginals", "anes96"] = "marginals"
    """`marginals`: sample every attribute below. `anes96`: resample ANES 1996 respondents and
    sample only the attributes below that the survey lacks."""
    description: str = ""
    attributes: dict[str, AttributeSpec] = field(default_factory=dict)
    """Attribute name -> marginal. With `source: anes96`, the synthetic complements."""
    correlations: list[Correlation] = field(default_factory=list)
    """Pairwise latent correlations (may involve survey attributes)."""
    text_limits: ClassVar[dict[str, int]] = {"description": MAX_CONTEXT_CHARS}

    def check(self) -> Iterable[tuple[str, Any, str]]:
        if bad := name_problem(self.name):
            yield "name", self.name, bad
        if len(self.attributes) > MAX_ATTRIBUTES:
            yield "attributes", f"{len(self.attributes)} attributes", f"at most {MAX_ATTRIBUTES} attributes"
            return
        for name in self.attributes:
            if bad := name_problem(name):
                yield f"attributes.{name}", name, bad
        known = set(self.attributes)
        parents = {a: s.category_names for a, s in self.attributes.items() if s.type == "categorical"}
        if self.source == "anes96":

            known |= set(ANES_ATTRIBUTES)
            parents.update(ANES_CATEGORIES)
            for name in self.attributes:
                if name in ANES_ATTRIBUTES:
                    yield f"attributes.{name}", name, "a name the ANES survey does not already provide"
        elif not self.attributes:
            yield "attributes", {}, "at least one attribute"
        for i, corr in enumerate(self.correlations):
            for name in corr.between:
                if name not in known:
                    yield f"correlations[{i}].between", name, f"an attribute name among {sorted(known)}"
            if all(name in known and name not in self.attributes for name in corr.between):
                yield f"correlations[{i}].between", corr.between, "at least one sampled attribute (the survey fixes correlations among its own)"
        for name, spec in self.attributes.items():
            if spec.given is not None:
                if spec.given not in parents or spec.given == name:
                    yield f"attributes.{name}.given", spec.given, f"the name of another categorical attribute ({', '.join(sorted(parents))})"
                elif spec.table is not None:
                    missing = [c for c in parents[spec.given] if c not in spec.table]
                    if missing:
                        yield f"attributes.{name}.table", sorted(spec.table), f"a row for every category of '{spec.given}' (missing {missing})"


# --------------------------------------------------------------------------- the population
@dataclass
class Population:
    """N agents' static identities, column-wise.

    `categorical[a]` holds int16 codes into `categories[a]`; `numeric[a]` float32 values in
    `numeric_range[a]`. `persona[i]` is agent i's short persona text, `names[i]` its name.
    """

    categorical: dict[str, np.ndarray]
    categories: dict[str, list[str]]
    numeric: dict[str, np.ndarray]
    numeric_range: dict[str, tuple[float, float]]
    names: list[str]
    persona: list[str]
    descriptions: dict[str, str] = field(default_factory=dict)
    synthetic: list[str] = field(default_factory=list)
    """Attributes sampled from marginals although the source is a survey."""
    source: str = "marginals"
    backstory: list[str] | None = None
    """LLM-written backstories (`lsm world --backstories`; "" where none was usable), already
    appended to `persona`; None for a templated population."""
    backstory_emb: np.ndarray | None = None
    """(N, T) float16 embeddings of `backstory` (`embed.persona_features`), stored with the world."""

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def attributes(self) -> list[str]:
        return list(self.categorical) + list(self.numeric)

    def labels(self, attr: str) -> np.ndarray:
        """Readable values of a categorical attribute, shape [N] (object array of str)."""
        return np.asarray(self.categories[attr], dtype=object)[self.categorical[attr]]

    def record(self, i: int) -> dict[str, Any]:
        """Agent i's identity as readable values."""
        out: dict[str, Any] = {"name": self.names[i]}
        for a, codes in self.categorical.items():
            out[a] = self.categories[a][int(codes[i])]
        for a, values in self.numeric.items():
            out[a] = float(values[i])
        return out

    def subset(self, index: np.ndarray) -> "Population":
        """The agents at `index`, in that order."""
        return dataclasses.replace(
            self,
            categorical={a: c[index] for a, c in self.categorical.items()},
            numeric={a: v[index] for a, v in self.numeric.items()},
            names=[self.names[i] for i in index],
            persona=[self.persona[i] for i in index],
        )


# --------------------------------------------------------------------------- sampling
def _categorical_from_uniform(u: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Quantile bins: u in [0,1) -> category index with the given proportions (in order)."""
    cum = np.cumsum(probs / probs.sum())
    cum[-1] = 1.0 + 1e-12
    return np.searchsorted(cum, u, side="right").astype(np.int16)


def _numeric_from_uniform(u: np.ndarray, z: np.ndarray, spec: AttributeSpec) -> np.ndarray:
    lo, hi = float(spec.min), float(spec.max)  # type: ignore[arg-type]
    if spec.dist == "normal":
        x = spec.mean + spec.std * z  # type: ignore[operator]
    elif spec.dist == "uniform":
        x = lo + (hi - lo) * u
    elif spec.dist == "lognormal":
        x = spec.median * np.exp(spec.sigma * z)  # type: ignore[operator]
    else:  # beta, scaled to [lo, hi]
        x = lo + (hi - lo) * stats.beta.ppf(np.clip(u, 1e-9, 1 - 1e-9), spec.a, spec.b)
    x = np.clip(x, lo, hi)
    if spec.integer:
        x = np.round(x)
    return x.astype(np.float32)


def _conditional_latents(
    names: list[str], corr: np.ndarray, observed: dict[str, np.ndarray], n: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Latent scores for the unobserved attributes given the observed ones (Gaussian copula)."""
    obs = [i for i, a in enumerate(names) if a in observed]
    hid = [i for i, a in enumerate(names) if a not in observed]
    if not hid:
        return {}
    s_hh = corr[np.ix_(hid, hid)]
    if obs:
        s_ho = corr[np.ix_(hid, obs)]
        s_oo = corr[np.ix_(obs, obs)]
        z_obs = np.stack([observed[names[i]] for i in obs], axis=1)  # [N, O]
        gain = np.linalg.solve(s_oo, s_ho.T).T  # [H, O]
        mean = z_obs @ gain.T  # [N, H]
        cov = s_hh - gain @ s_ho.T
    else:
        mean = np.zeros((n, len(hid)))
        cov = s_hh
    chol = np.linalg.cholesky(cov + 1e-9 * np.eye(len(hid)))
    z = mean + rng.standard_normal((n, len(hid))) @ chol.T
    return {names[i]: z[:, k] for k, i in enumerate(hid)}


def sample_population(config: PopulationConfig, n: int, seed: int, source_file: str | None = None) -> Population:
    """Sample N agents from `config` with `seed` (same inputs -> identical population)."""
    if n < 1:
        raise ConfigError("arguments", [Problem("agents", n, "a positive number of agents")], "request")
    rng = seeds.rng(seed, seeds.Stream.POPULATION)
    categorical: dict[str, np.ndarray] = {}
    categories: dict[str, list[str]] = {}
    numeric: dict[str, np.ndarray] = {}
    numeric_range: dict[str, tuple[float, float]] = {}
    descriptions: dict[str, str] = {}
    observed_scores: dict[str, np.ndarray] = {}
    survey_corr = None

    if config.source == "anes96":

        survey = resample_anes96(n, rng)
        categorical.update(survey.categorical)
        categories.update(survey.categories)
        numeric.update(survey.numeric)
        numeric_range.update(survey.numeric_range)
        descriptions.update(survey.descriptions)
        # Only survey attributes that a configured correlation mentions enter the copula; their
        # mutual correlation is the survey's own (computed on all respondents).
        linked = [a for a in survey.scores if any(a in c.between for c in config.correlations)]
        observed_scores = {a: survey.scores[a] for a in linked}
        if linked:
            survey_corr = np.atleast_2d(np.corrcoef(np.stack([survey.survey_scores[a] for a in linked])))

    # Joint latent correlation over every attribute (linked survey ones first, then sampled).
    latent_names = list(observed_scores) + list(config.attributes)
    index = {a: i for i, a in enumerate(latent_names)}
    corr = np.eye(len(latent_names))
    for c in config.correlations:
        i, j = index[c.between[0]], index[c.between[1]]
        corr[i, j] = corr[j, i] = c.rho
    if survey_corr is not None:
        k = len(observed_scores)
        corr[:k, :k] = survey_corr
    if len(latent_names) and np.linalg.eigvalsh(corr).min() <= 1e-9:
        raise ConfigError(
            source_file,
            [Problem("correlations", [f"{c.between[0]}~{c.between[1]}={c.rho}" for c in config.correlations],
                     "pairwise correlations that are jointly possible (with the survey's own, if any): "
                     "the correlation matrix is not positive definite")],
            "population",
        )
    latent = _conditional_latents(latent_names, corr, observed_scores, n, rng)

    # Unconditional attributes first, then those `given` another (in dependency order).
    pending = dict(config.attributes)
    while pending:
        progressed = False
        for name, spec in list(pending.items()):
            if spec.given is not None and spec.given not in categorical:
                continue
            z = latent[name]
            u = special.ndtr(z)
            descriptions[name] = spec.description
            if spec.type == "categorical":
                cats = spec.category_names
                categories[name] = cats
                if spec.given is None:
                    categorical[name] = _categorical_from_uniform(u, spec.proportions)
                else:
                    assert spec.table is not None
                    parent_codes = categorical[spec.given]
                    codes = np.zeros(n, dtype=np.int16)
                    for code, parent in enumerate(categories[spec.given]):
                        rows = parent_codes == code
                        probs = np.array([spec.table[parent].get(c, 0.0) for c in cats])
                        codes[rows] = _categorical_from_uniform(u[rows], probs)
                    categorical[name] = codes
            else:
                numeric[name] = _numeric_from_uniform(u, z, spec)
                numeric_range[name] = (float(spec.min), float(spec.max))  # type: ignore[arg-type]
            del pending[name]
            progressed = True
        if not progressed:
            raise ConfigError(source_file, [Problem(f"attributes.{a}.given", s.given, "no circular `given` chain")
                                            for a, s in pending.items()], "population")


    names = make_names(categorical, categories, rng)
    pop = Population(
        categorical=categorical,
        categories=categories,
        numeric=numeric,
        numeric_range=numeric_range,
        names=names,
        persona=[],
        descriptions=descriptions,
        synthetic=list(config.attributes) if config.source != "marginals" else [],
        source=config.source,
    )
    pop.persona = make_personas(pop)
    return pop


def load_population_config(path: str | Path) -> PopulationConfig:
    return load_config(PopulationConfig, path, kind="population config")


# --------------------------------------------------------------------------- identity encoding
@dataclass
class IdentityVocab:
    """The documented mapping from identities to tensors.

    `categorical` lists (attribute, categories) in column order of the code tensor; codes are
    indices into each list. `numeric` lists (attribute, min, max) in column order; values are
    normalised to [0, 1] by (x - min) / (max - min).
    """

    categorical: list[tuple[str, list[str]]]
    numeric: list[tuple[str, float, float]]

    @classmethod
    def of(cls, pop: Population) -> "IdentityVocab":
        return cls(
            categorical=[(a, list(pop.categories[a])) for a in pop.categorical],
            numeric=[(a, *pop.numeric_range[a]) for a in pop.numeric],
        )

    @property
    def cardinalities(self) -> list[int]:
        return [len(c) for _, c in self.categorical]

    def to_dict(self) -> dict[str, Any]:
        return {
            "categorical": [{"attribute": a, "categories": c} for a, c in self.categorical],
            "numeric": [{"attribute": a, "min": lo, "max": hi} for a, lo, hi in self.numeric],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IdentityVocab":
        return cls(
            categorical=[(e["attribute"], list(e["categories"])) for e in d["categorical"]],
            numeric=[(e["attribute"], float(e["min"]), float(e["max"])) for e in d["numeric"]],
        )


UNKNOWN_CODE = -1
"""Identity code of a category the vocabulary lacks (or of an attribute the world lacks): the
student adds nothing for it (`SocietyModel.identity` masks it), as for a value never seen."""
UNKNOWN_NUMERIC = 0.5
"""Normalised value of a numeric attribute the world lacks: the middle of the training range.
The vocabulary keeps each range, not the training mean, and the numeric projection has no mask,
so the neutral value is the one in the middle of what the student saw ([0, 1] after scaling)."""


@dataclass
class IdentityMismatch:
    """How a population differs from a vocabulary (a checkpoint's training world)."""

    missing: list[str]
    """Vocabulary attributes the population lacks."""
    unseen: dict[str, list[str]]
    """attribute -> the population's categories the vocabulary never saw."""
    shared: int
    """Vocabulary attributes the population has."""
    attributes: list[str] = field(default_factory=list)
    """The vocabulary's attributes (categorical then numeric, column order)."""

    def __bool__(self) -> bool:
        return bool(self.missing or self.unseen)

    @property
    def disjoint(self) -> bool:
        """The vocabulary has attributes and the population none of them: nothing of an agent's
        identity would reach the student but its persona text (refused, not warned about)."""
        return self.shared == 0 and bool(self.attributes)

    @property
    def key(self) -> tuple:
        """What the mismatch is, whatever file it came from (a warning is printed once per key)."""
        return tuple(self.missing), tuple((a, tuple(c)) for a, c in self.unseen.items())

    def describe(self, source: str = "this world") -> str:
        """One line, e.g. `w.h5 lacks party_id, ideology and has categories the checkpoint never
        saw (region: Mars); they are encoded as unknown (the persona text still carries them)`."""
        parts = [f"lacks {', '.join(self.missing)}"] if self.missing else []
        if self.unseen:
            parts.append("has categories the checkpoint never saw (" + "; ".join(
                f"{a}: {', '.join(c[:5])}{f' and {len(c) - 5} more' if len(c) > 5 else ''}" for a, c in self.unseen.items()) + ")")
        return f"{source} {' and '.join(parts)}; they are encoded as unknown (the persona text still carries them)"


def identity_mismatch(pop: Population, vocab: IdentityVocab) -> IdentityMismatch:
    """The one rule comparing a population with a vocabulary, by attribute and category name:
    which of the vocabulary's attributes the population lacks, which of its categories the
    vocabulary never saw, and how many attributes they share. Every reader that encodes a world
    for a checkpoint goes through it (`lsm.model.checkpoint.Student.identity`)."""
    missing, unseen, shared = [], {}, 0
    for attr, cats in vocab.categorical:
        if attr not in pop.categorical:
            missing.append(attr)
            continue
        shared += 1
        known = set(cats)
        new = [c for c in pop.categories[attr] if c not in known]
        if new:
            unseen[attr] = new
    for attr, _, _ in vocab.numeric:
        if attr in pop.numeric:
            shared += 1
        else:
            missing.append(attr)
    return IdentityMismatch(missing, unseen, shared, [a for a, _ in vocab.categorical] + [a for a, _, _ in vocab.numeric])


def encode_identity(pop: Population, vocab: IdentityVocab | None = None, unknown: bool = False):
    """Identity tensors: (codes LongTensor [N, n_cat], numeric FloatTensor [N, n_num] in [0,1]).

    With a `vocab` from another population (e.g. the training world's), categories are
    re-mapped by name. A category or attribute the vocab does not know raises a clear error,
    or with `unknown=True` is encoded as `UNKNOWN_CODE` / `UNKNOWN_NUMERIC`. A checkpoint's
    readers (rollout, evaluate, probe, narrate) call it through `Student.identity`, which applies
    `identity_mismatch` first (refusal when nothing overlaps, one warning otherwise).
    """
    import torch

    vocab = vocab or IdentityVocab.of(pop)
    cols = []
    for attr, cats in vocab.categorical:
        if attr not in pop.categorical:
            if not unknown:
                raise KeyError(f"identity attribute '{attr}' is missing from this population (has {pop.attributes})")
            cols.append(np.full(pop.n, UNKNOWN_CODE, dtype=np.int64))
            continue
        lookup = {c: i for i, c in enumerate(cats)}
        if not unknown and any(c not in lookup for c in pop.categories[attr]):
            bad = next(c for c in pop.categories[attr] if c not in lookup)
            raise KeyError(f"category {bad!r} of '{attr}' is not in the vocabulary {cats}")
        remap = np.array([lookup.get(c, UNKNOWN_CODE) for c in pop.categories[attr]], dtype=np.int64)
        cols.append(remap[pop.categorical[attr]])
    codes = torch.from_numpy(np.stack(cols, axis=1)) if cols else torch.zeros(pop.n, 0, dtype=torch.long)
    nums = []
    for attr, lo, hi in vocab.numeric:
        if attr not in pop.numeric:
            if not unknown:
                raise KeyError(f"identity attribute '{attr}' is missing from this population (has {pop.attributes})")
            nums.append(np.full(pop.n, UNKNOWN_NUMERIC))
            continue
        nums.append(np.clip((pop.numeric[attr] - lo) / (hi - lo), 0.0, 1.0))
    numeric = (
        torch.from_numpy(np.stack(nums, axis=1).astype(np.float32)) if nums else torch.zeros(pop.n, 0)
    )
    return codes, numeric


def marginals_table(pop: Population, max_categories: int = 8) -> list[str]:
    """Readable lines: each attribute's category shares or numeric quantiles."""
    lines = []
    for a, codes in pop.categorical.items():
        counts = np.bincount(codes, minlength=len(pop.categories[a])) / pop.n
        order = np.argsort(-counts)[:max_categories]
        shares = ", ".join(f"{pop.categories[a][k]} {counts[k]:.0%}" for k in order)
        more = f", … (+{len(counts) - max_categories})" if len(counts) > max_categories else ""
        lines.append(f"{a:<22} {shares}{more}")
    for a, v in pop.numeric.items():
        q = np.quantile(v, [0.05, 0.5, 0.95])
        lines.append(f"{a:<22} mean {v.mean():.3g}  p5 {q[0]:.3g}  median {q[1]:.3g}  p95 {q[2]:.3g}")
    return lines


__all__ = [
    "AttributeSpec",
    "Correlation",
    "PopulationConfig",
    "Population",
    "IdentityVocab",
    "sample_population",
    "load_population_config",
    "IdentityMismatch",
    "identity_mismatch",
    "encode_identity",
    "marginals_table",
]


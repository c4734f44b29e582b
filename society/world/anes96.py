"""Real survey microdata: the American National Election Study 1996 sample.

`statsmodels.datasets.anes96` ships 944 respondents. `resample_anes96(n, rng)` draws N rows with
replacement and turns the survey's codes into readable attributes (codebook: statsmodels'
`anes96.NOTE`). Income brackets become dollars drawn uniformly inside the respondent's bracket,
so resampled agents do not share exact incomes; everything else is kept as coded.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARTY_ID = [
    "strong_democrat", "weak_democrat", "independent_democrat", "independent",
    "independent_republican", "weak_republican", "strong_republican",
]  # PID 0..6
IDEOLOGY = [
    "extremely_liberal", "liberal", "slightly_liberal", "moderate",
    "slightly_conservative", "conservative", "extremely_conservative",
]  # selfLR 1..7
EDUCATION = [
    "grade_school", "some_high_school", "high_school", "some_college",
    "college_degree", "masters_degree", "phd",
]  # educ 1..7
PARTY = ["democrat", "independent", "republican"]  # PID 0-2 / 3 / 4-6 (leaners with their party)
VOTE = ["clinton", "dole"]  # vote 0 / 1
AREA = ["rural", "town", "city", "metro"]  # census place population < 2.5k / < 50k / < 500k / more
AREA_EDGES_THOUSANDS = [2.5, 50.0, 500.0]

# Household income brackets (codes 1..24), in dollars; the top bracket is capped at 150k.
INCOME_BRACKETS = [
    (0, 2999), (3000, 4999), (5000, 6999), (7000, 8999), (9000, 9999), (10000, 10999),
    (11000, 11999), (12000, 12999), (13000, 13999), (14000, 14999), (15000, 16999),
    (17000, 19999), (20000, 21999), (22000, 24999), (25000, 29999), (30000, 34999),
    (35000, 39999), (40000, 44999), (45000, 49999), (50000, 59999), (60000, 74999),
    (75000, 89999), (90000, 104999), (105000, 150000),
]

ANES_CATEGORIES = {
    "party_id": PARTY_ID, "party": PARTY, "ideology": IDEOLOGY, "education": EDUCATION,
    "vote_1996": VOTE, "area": AREA,
}

ANES_ATTRIBUTES = {
    "party_id": "party identification, 7 points (ANES PID)",
    "party": "party identification collapsed to 3 (leaners with their party)",
    "ideology": "left-right self-placement, 7 points (ANES selfLR)",
    "education": "highest education (ANES educ)",
    "vote_1996": "expected presidential vote 1996",
    "area": "size of the census place the respondent lives in",
    "age": "age in years",
    "income": "household income in US dollars (uniform within the ANES bracket)",
    "tv_news_days": "days per week the respondent watches TV news",
}


@dataclass
class SurveySample:
    categorical: dict[str, np.ndarray]
    categories: dict[str, list[str]]
    numeric: dict[str, np.ndarray]
    numeric_range: dict[str, tuple[float, float]]
    descriptions: dict[str, str]
    respondent: np.ndarray
    """Row index of the ANES respondent each agent was resampled from, [N]."""
    scores: dict[str, np.ndarray]
    """Each agent's normal score on each survey attribute, [N]."""
    survey_scores: dict[str, np.ndarray]
    """The 944 respondents' normal scores, [944] (for the survey's own correlations)."""


def load_anes96():
    """The raw survey as a pandas DataFrame (944 rows)."""
    from statsmodels.datasets import anes96

    return anes96.load_pandas().data


def _survey_columns(data) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """All respondents' readable columns, each [944]: categorical codes, numeric values, and the
    lower and upper dollar bounds of each respondent's income bracket."""
    pid = data["PID"].to_numpy().astype(np.int16)
    lo = np.array([b[0] for b in INCOME_BRACKETS], dtype=np.float64)
    hi = np.array([b[1] for b in INCOME_BRACKETS], dtype=np.float64)
    bracket = data["income"].to_numpy().astype(np.int64) - 1
    categorical = {
        "party_id": pid,
        "party": np.where(pid <= 2, 0, np.where(pid == 3, 1, 2)).astype(np.int16),
        "ideology": (data["selfLR"].to_numpy() - 1).astype(np.int16),
        "education": (data["educ"].to_numpy() - 1).astype(np.int16),
        "vote_1996": data["vote"].to_numpy().astype(np.int16),
        "area": np.searchsorted(AREA_EDGES_THOUSANDS, data["popul"].to_numpy(), side="right").astype(np.int16),
    }
    numeric = {
        "age": data["age"].to_numpy().astype(np.float32),
        "tv_news_days": data["TVnews"].to_numpy().astype(np.float32),
    }
    return categorical, numeric, lo[bracket].astype(np.float32), hi[bracket].astype(np.float32)


def normal_scores(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Standard-normal scores of values by mid-ranks (ties broken at random)."""
    from scipy import special

    order = np.lexsort((rng.random(len(values)), values))
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    return special.ndtri((ranks + 0.5) / len(values))


def resample_anes96(n: int, rng: np.random.Generator) -> SurveySample:
    """N agents resampled with replacement from the ANES 1996 respondents.

    `scores[a]` are each agent's normal scores on attribute a *within the survey* (computed on
    all 944 respondents), and `survey_scores[a]` the respondents' own, for the copula.
    """
    data = load_anes96()
    categorical_all, numeric_all, lo, hi = _survey_columns(data)
    rows = rng.integers(0, len(data), size=n)
    income_mid = (lo + hi) / 2
    survey_scores = {a: normal_scores(v.astype(np.float64), rng) for a, v in {**categorical_all, **numeric_all}.items()}
    survey_scores["income"] = normal_scores(income_mid.astype(np.float64), rng)
    income = lo[rows] + rng.random(n) * (hi[rows] - lo[rows])
    numeric = {
        "age": numeric_all["age"][rows],
        "income": np.round(income).astype(np.float32),
        "tv_news_days": numeric_all["tv_news_days"][rows],
    }
    numeric_range = {"age": (18.0, 95.0), "income": (0.0, 150000.0), "tv_news_days": (0.0, 7.0)}
    return SurveySample(
        categorical={a: v[rows] for a, v in categorical_all.items()},
        categories={k: list(v) for k, v in ANES_CATEGORIES.items()},
        numeric=numeric,
        numeric_range=numeric_range,
        descriptions=dict(ANES_ATTRIBUTES),
        respondent=rows,
        scores={a: v[rows] for a, v in survey_scores.items()},
        survey_scores=survey_scores,
    )

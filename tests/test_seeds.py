"""The one seed scheme (`lsm.society.seeds`): named streams, independent and reproducible; the
streams baked into the committed corpora still draw what those files hold; and no magic seed
number anywhere else in the code base."""
from __future__ import annotations

import ast
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lsm.society import seeds
from lsm.society.seeds import LEGACY, Stream

ROOT = Path(__file__).resolve().parents[1]
SEEDS_PY = ROOT / "society" / "seeds.py"
SPAWNED = [s for s in Stream if s not in LEGACY]
KEYS = {Stream.EXPOSURE: (3, 2), Stream.LLM_CALL: (2, 1, 1), Stream.LLM_ROW: (5,), Stream.NEIGHBORS: (2,),
        Stream.NEIGHBOR_COUNT: (2,), Stream.TEACHER_DECISION: (2, 1), Stream.GRAPH: (), Stream.POPULATION: ()}
"""Each legacy stream with keys of the arity its caller uses (uid, tick / tick, chunk, attempt / ...)."""


def _draw(seed, stream, *keys):
    return tuple(seeds.rng(seed, stream, *keys).integers(0, 2**62, 4).tolist())


def test_no_two_streams_share_a_code_and_each_says_what_it_seeds():
    assert len(Stream.__members__) == len(Stream) == len({int(s) for s in Stream})  # no alias: one code, one name
    tree = ast.parse(SEEDS_PY.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Stream")
    body = cls.body
    documented = {a.targets[0].id for a, d in zip(body, body[1:])  # type: ignore[attr-defined]
                  if isinstance(a, ast.Assign) and isinstance(d, ast.Expr) and isinstance(d.value, ast.Constant)}
    assert documented == set(Stream.__members__), set(Stream.__members__) - documented
    assert set(LEGACY) <= set(Stream)


def test_streams_are_independent():
    """Different stream names give different draws: every spawned stream for the same seed and
    keys; every legacy stream at the key arity its caller uses, against all the others."""
    for keys in ((), (0,), (1, 2), (7, 0, 3)):
        draws = [_draw(11, s, *keys) for s in SPAWNED]
        assert len(set(draws)) == len(SPAWNED), keys
    draws = {s: _draw(11, s, *KEYS.get(s, (2, 1))) for s in Stream}
    assert len(set(draws.values())) == len(Stream)
    for a, b in itertools.combinations(SPAWNED[:6], 2):  # and not merely shifted copies of one another
        x, y = seeds.rng(3, a, 1).random(2000), seeds.rng(3, b, 1).random(2000)
        assert abs(np.corrcoef(x, y)[0, 1]) < 0.1 and not np.isin(x, y).any()


def test_keyed_draws_are_reproducible_and_keyed():
    for s in Stream:
        keys = KEYS.get(s, (4, 2))
        assert _draw(5, s, *keys) == _draw(5, s, *keys)
        assert _draw(5, s, *keys) != _draw(6, s, *keys)  # the run seed matters
        if keys:
            bumped = (keys[0] + 1, *keys[1:])
            assert _draw(5, s, *keys) != _draw(5, s, *bumped)  # so do the keys
    assert _draw(5, Stream.TICK_NOISE, 1, 2) != _draw(5, Stream.TICK_NOISE, 2, 1)  # in order
    # numpy ints are keys like Python ints; a draw does not depend on what ran before it
    assert _draw(5, Stream.EPOCH_ORDER, np.int64(3)) == _draw(5, Stream.EPOCH_ORDER, 3)
    # and a fresh process draws the same numbers
    code = ("from lsm.society import seeds; import torch; "
            "print(seeds.rng(5, seeds.Stream.TICK_NOISE, 3).integers(0, 2**62, 4).tolist(), "
            "torch.rand(3, generator=seeds.torch_generator(5, seeds.Stream.STUDENT_DECISION, 3)).tolist(), "
            "seeds.int_seed(5, seeds.Stream.NARRATION, 2, bits=31))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    here = (f"{list(_draw(5, Stream.TICK_NOISE, 3))} "
            f"{torch.rand(3, generator=seeds.torch_generator(5, Stream.STUDENT_DECISION, 3)).tolist()} "
            f"{seeds.int_seed(5, Stream.NARRATION, 2, bits=31)}")
    assert out == here


def test_int_seeds_and_torch_generators():
    for s in Stream:
        keys = KEYS.get(s, (1,))
        v = seeds.int_seed(2**40 + 9, s, *keys)
        assert 0 <= v < 2**63
        assert 0 <= seeds.int_seed(9, s, *keys, bits=31) < 2**31  # what an LLM server takes
        g = torch.Generator().manual_seed(seeds.int_seed(9, s, *keys))
        assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=seeds.torch_generator(9, s, *keys)))
    assert seeds.int_seed(3, Stream.LLM_CALL, 1, 0, 0) < 2**31 - 1
    with pytest.raises(ValueError):
        seeds.int_seed(3, Stream.REPLAY, bits=0)


def test_legacy_streams_keep_the_derivation_the_corpora_were_made_with():
    """The old per-site derivations, written out: the legacy streams still draw them."""
    for seed, t, k in ((0, 0, 0), (1, 3, 2), (2**33 + 1, 7, 5)):
        same = lambda a, b: np.array_equal(a.random(6), b.random(6))  # noqa: E731
        assert same(seeds.rng(seed, Stream.NEIGHBORS, t), np.random.default_rng([seed, t, 17]))
        assert same(seeds.rng(seed, Stream.NEIGHBOR_COUNT, t), np.random.default_rng([seed, t, 18]))
        assert same(seeds.rng(seed, Stream.EXPOSURE, k, t), np.random.default_rng([seed, k, t]))
        assert same(seeds.rng(seed, Stream.TEACHER_DECISION, t, k), np.random.default_rng([seed, t, k, 99]))
        assert same(seeds.rng(seed, Stream.POPULATION), np.random.default_rng([seed, 0x9E3779B9]))
        assert same(seeds.rng(seed, Stream.GRAPH), np.random.default_rng([seed, 0x51ED]))
        old_call = int(np.random.default_rng([p & 0xFFFFFFFF for p in (seed, t, k, 1)]).integers(0, 2**31 - 1))
        assert seeds.int_seed(seed, Stream.LLM_CALL, t, k, 1) == old_call
        old_row = int(np.random.SeedSequence([seed & 0xFFFFFFFF, k]).generate_state(1, np.uint64)[0] >> 1)
        assert seeds.int_seed(seed, Stream.LLM_ROW, k) == old_row


CORPUS_FILES = sorted((ROOT / "data_gen/corpus").glob("n*/*_s[01].h5"))


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_corpus_perceptions_are_what_the_streams_draw(path):
    """Replaying a committed corpus file's perception from its world, scenario and seed through
    the loop's own functions gives its stored exposures and shown neighbours, tick by tick
    (the triggers fed the stored decisions): the files stay valid under this scheme."""
    from lsm.society.loop.events import EventSchedule, PopulationState
    from lsm.society.loop.neighbors import NeighborIndex, recorded_rule
    from lsm.society.loop.runner import capped_exposure
    from lsm.society.store import TraceFile

    with TraceFile(path) as tf:
        pop, graph = tf.world()
        sc, seed, rule = tf.scenario, int(tf.seeds["teacher"]), recorded_rule(tf.f.attrs, str(path))
        shown, exposed = tf.array("shown_neighbors"), tf.array("exposed_events")
        valid, decision, channels = tf.array("valid"), tf.array("decision"), tf.array("channels")
        value = tf.array("decision_value") if "decision_value" in tf.fields else None
        expression = tf.array("expression")
    assert rule is not None
    schedule, index = EventSchedule(sc, pop, graph, seed), NeighborIndex.of(graph, rule.weights)
    spoke = np.zeros(pop.n, dtype=bool)
    for t in range(len(shown)):
        _, ids = capped_exposure(schedule.exposure(t), schedule.events_at(t))
        np.testing.assert_array_equal(ids, exposed[t], err_msg=f"exposures, tick {t}")
        np.testing.assert_array_equal(index.shown(rule, spoke, seed, t), shown[t], err_msg=f"shown neighbours, tick {t}")
        schedule.after_tick(t, PopulationState(decision=decision[t].astype(np.int64), channels=channels[t], valid=valid[t],
                                               decision_value=None if value is None else value[t]))
        spoke = valid[t] & np.array([bool(m) for m in expression[t]])
    if rule.vary:
        assert len(np.unique((shown[1:] >= 0).sum(-1))) >= 3


def test_seeds_imports_nothing_of_lsm_nor_torch_at_import():
    tree = ast.parse(SEEDS_PY.read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names] + \
            [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not [m for m in names if m.startswith("lsm") and m not in ("lsm.errors", "lsm.config")], names
    out = subprocess.run([sys.executable, "-c", "import sys, lsm.society.seeds; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


MAGIC = [re.compile(re.escape(s)) for s in ("default_rng([", "1_000_003", "SeedSequence(")] + [
    re.compile(r"\bseed\w*\s*[*+]\s*\d"),  # a seed shifted or scaled by a constant: `seed * 100_003 + epoch`, `seed + 1`
]
SKIP_DIRS = {"tests", "node_modules", "__pycache__", "build", "dist"}


def _code_files():
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".") and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            if name.endswith(".py") and path != SEEDS_PY:
                yield path


def test_no_magic_seed_numbers_outside_the_seed_module():
    """Every random stream comes from `lsm.society.seeds`: a seed tag, offset or `SeedSequence`
    written anywhere else (tests aside) fails here; add a `Stream` instead."""
    files = list(_code_files())
    assert len(files) > 50 and ROOT / "society/loop/neighbors.py" in files
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if any(m.search(line) for m in MAGIC)]
    assert not found, "ad-hoc seed derivations (use lsm.society.seeds):\n" + "\n".join(found)

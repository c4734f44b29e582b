"""The one seed scheme: every random draw of the code base comes from a named stream here.

A run has one integer seed (`lsm world --seed`, `lsm gen --seed` / `--llm_seed`, `lsm rollout
--seed`, a training preset's `seed`, an analysis' `seed`). Code that needs randomness asks this
module for a generator of one named `Stream`, keyed by that seed and, where the draw repeats, by
integers such as the tick, the event uid, the chunk, the attempt or the sample:

    rng = seeds.rng(seed, Stream.EXPOSURE, uid, tick)               # numpy Generator
    g = seeds.torch_generator(seed, Stream.TICK_NOISE, tick)        # torch.Generator
    s = seeds.int_seed(seed, Stream.NARRATION, attempt, bits=31)    # an int (an LLM call's seed)

Derivation: `numpy.random.SeedSequence(entropy=seed, spawn_key=(code, *keys))`, the stream's
`code` first. Two streams differ in their code, so their draws are independent (the spawn
mechanism numpy uses for child streams); one (seed, stream, keys) gives the same draws in every
process, whatever else ran before; a draw keyed per tick (or per agent chunk) does not depend
on how many ticks (or chunks) other draws used. Codes are defined once, in `Stream`; nothing
else in the code base writes a seed offset, a tag or a `SeedSequence` (tests/test_seeds.py greps
for them).

Legacy streams. The reference corpora committed in `data_gen/corpus/n20` and `n200` (the world,
exposures, shown neighbours, the teacher's sampled decisions and LLM calls) were generated
before this module, with `default_rng([seed, *keys, tag])`-style derivations. The streams whose
draws those files hold keep that derivation exactly (`LEGACY`, written here once), so
`data_gen/corpus/make_corpus.sh` still reproduces the files and a student rolled out on the
corpus world with the teacher's seed sees the teacher's exposures and neighbours
(tests/test_seeds.py replays the committed files' perceptions). For a legacy stream whose old
derivation carried a tag, its code is that tag. The legacy entropy is not spawned, so the
untagged ones (`EXPOSURE`, `LLM_CALL`, `LLM_ROW`) are told apart only by their keys' arity and
their seeds (the scenario seed, the LLM seed, an LLM call's seed): `EXPOSURE` (s, uid, 0) draws
what `LLM_ROW` (s, uid) does. New streams are spawned; keep `LEGACY` to those files' streams.

Plain module (numpy only): `torch` is imported inside `torch_generator`, so the world and the
loop, which never need it, do not pay its import.
"""
from __future__ import annotations

from enum import IntEnum, unique
from typing import Any, Callable

import numpy as np


@unique
class Stream(IntEnum):
    """The named random streams and their codes (unique: `@unique` refuses a repeated code)."""

    # -- legacy streams: their draws are in the committed corpora (`LEGACY`) --------------------
    EXPOSURE = 1
    """Who of an event's audience sees it (an exposure `fraction` < 1), per (event uid, tick)."""
    LLM_CALL = 2
    """The seed (31 bits) of one teacher LLM call, per (tick, agent chunk, attempt), from the LLM seed."""
    LLM_ROW = 3
    """The embedded backend's sampling generator of one row, per (call seed, row index)."""
    NEIGHBORS = 17
    """The Gumbel keys that pick which in-neighbours' messages are shown, per tick."""
    NEIGHBOR_COUNT = 18
    """How many of the K neighbours each agent is shown (varied neighbourhoods), per tick."""
    TEACHER_DECISION = 99
    """The LLM teacher's decision drawn from its distribution, per (tick, agent chunk), from the LLM seed."""
    GRAPH = 0x51ED
    """The typed social graph's edges (`build_graph`)."""
    POPULATION = 0x9E3779B9
    """The sampled population: names, attributes, latent scores (`sample_population`)."""

    # -- the world and the society -------------------------------------------------------------
    BACKSTORY = 101
    """Which meta-prompt and temperature each persona's LLM backstory gets."""
    BACKSTORY_LLM = 102
    """The seed of a backstory LLM call, per (temperature level, attempt)."""
    HOMOPHILY = 103
    """The edges `homophily_stats` samples from a big graph."""
    SHUFFLED_SENDERS = 104
    """The random senders of the shuffled-senders intervention, per tick."""
    BOOTSTRAP = 105
    """The agent resamples of the paired bootstrap (`lsm.society.stats.bootstrap`)."""
    DECILE_SENDERS = 106
    """The random senders of the top- and bottom-decile sender edits (`interventions.tables.decile_sender`), per (tick, tie type, decile)."""

    # -- data generation ---------------------------------------------------------------------
    PLANTED_EFFECTS = 111
    """The planted society's per-agent random effects (opinion r_i, channels η_ic), from the scenario seed."""
    PLANTED_DIRECTIONS = 112
    """The planted society's text directions (stance, opinion, actions), from its `embedding_seed`."""
    PLANTED_NOISE = 113
    """The planted society's per-tick noise (opinion, stance, channels, decision draws, texts), from the LLM seed."""
    SENSITIVITY_SAMPLE = 114
    """The agents `lsm sensitivity` asks again, per tick."""
    MESSAGE_ORDERS = 118
    """The orders of an agent-tick's shown messages that the teacher scores (order-free targets,
    `lsm sensitivity`), per (tick, agent)."""
    PLACEBO_TEXTS = 119
    """The placebo messages `lsm sensitivity` shows in place of the real ones, per (tick, agent)."""
    CONTRAST_SAMPLE = 120
    """Which agent-ticks the teacher also scores under paired contrasts, per tick."""
    CREDIBILITY_JITTER = 115
    """The events' credibilities of a recovery scenario variant, per variant."""
    VALENCE_JITTER = 116
    """The events' valences of a recovery scenario variant, per variant."""
    PLANTED_PRIOR = 117
    """A random planted configuration drawn from the prior (`data_gen/planted/prior.py`), per (configuration k, part)."""
    SCENARIO_VARIANT = 138
    """A corpus scenario variant's draws (`data_gen/corpus/variants.py`), per (scenario, variant,
    part): which paraphrase each event's text takes, the variant's seed of `jitter_events`, and
    (per scenario) the order in which training variants take the rule's training values."""
    CAPACITY = 139
    """`lsm capacity` and the paired-effects experiment: the held-out split (part 0), the sampled
    contrasts (part 1), the planted decision draws (part 2, per trace)."""
    CALIBRATE_START = 140
    """`lsm calibrate`: each restart's starting point in the parameters' box (key: restart)."""
    CALIBRATE_SEARCH = 141
    """`lsm calibrate`: the gradient-free baselines' draws (CMA-ES's seed, random search's points)."""
    CALIBRATE_TRUTH = 142
    """`lsm calibrate --check`: the hidden true values drawn in the parameters' box."""

    # -- the student: rollouts, training, replays ---------------------------------------------
    AGENT_NOISE = 121
    """A student rollout's per-agent stochastic latent, drawn once from its prior."""
    TICK_NOISE = 122
    """A student rollout's per-tick noise input (N, Rt), per tick."""
    STUDENT_DECISION = 123
    """A student rollout's decisions drawn from its distributions, per tick."""
    TRAIN_NOISE = 124
    """Training unrolls' noise (agent latents, posterior samples, own-message dropout), per optimizer step."""
    VALIDATION_NOISE = 125
    """Validation unrolls' noise, per validation batch."""
    EPOCH_ORDER = 126
    """Training batches' order and the agents of each batch, per epoch."""
    REPLAY = 127
    """Teacher-forced replays (paired ablations): agent latents and tick noise, per sample."""
    SYNTHETIC_INPUTS = 128
    """`lsm bench`'s random inputs of the right shapes."""
    STUDENT_STANCE = 129
    """A student rollout's stances drawn from their predicted distributions (`stance_noise`), per tick."""
    STUDENT_CHANNELS = 130
    """A student rollout's per-tick channel noise (`channel_effects`), per tick."""

    # -- analyses ----------------------------------------------------------------------------
    CLUSTER_SAMPLE = 131
    """The agents a rollout report fits its clusters on (when N is above the sample size)."""
    PROBE_SPLIT = 132
    """The held-out agents of a linear probe."""
    PROBE_SHUFFLE = 133
    """The shuffled targets of a probe's shuffled-label baseline."""
    NARRATION = 134
    """The seed of a narration's LLM call (scaffolded reasons), per attempt."""
    INTERVIEW = 135
    """The seed of an interview answer's LLM call, per attempt."""
    SNOWBALL = 136
    """The explorer's snowball sample of a big graph (random starts)."""
    LAYOUT = 137
    """The explorer's initial graph layout positions."""


_MASK32 = 0xFFFFFFFF

LEGACY: dict[Stream, Callable[[int, Stream, tuple[int, ...]], list[int]]] = {
    Stream.POPULATION: lambda seed, code, keys: [seed, *keys, int(code)],  # default_rng([seed, 0x9E3779B9])
    Stream.GRAPH: lambda seed, code, keys: [seed, *keys, int(code)],  # default_rng([seed, 0x51ED])
    Stream.NEIGHBORS: lambda seed, code, keys: [seed, *keys, int(code)],  # default_rng([seed, tick, 17])
    Stream.NEIGHBOR_COUNT: lambda seed, code, keys: [seed, *keys, int(code)],  # default_rng([seed, tick, 18])
    Stream.TEACHER_DECISION: lambda seed, code, keys: [seed, *keys, int(code)],  # default_rng([llm_seed, tick, chunk, 99])
    Stream.EXPOSURE: lambda seed, code, keys: [seed, *keys],  # default_rng([seed, uid, tick])
    Stream.LLM_CALL: lambda seed, code, keys: [k & _MASK32 for k in (seed, *keys)],
    Stream.LLM_ROW: lambda seed, code, keys: [k & _MASK32 for k in (seed, *keys)],
}
"""The streams whose draws are in the committed corpora, with the entropy they were generated
with (`SeedSequence(entropy)`, no spawn key): kept so those files stay reproducible."""


def sequence(seed: int, stream: Stream, *keys: int) -> np.random.SeedSequence:
    """The `SeedSequence` of `stream` for run `seed` and `keys` (non-negative integers)."""
    ks = tuple(int(k) for k in keys)
    legacy = LEGACY.get(stream)
    if legacy is not None:
        return np.random.SeedSequence(legacy(int(seed), stream, ks))
    return np.random.SeedSequence(int(seed), spawn_key=(int(stream), *ks))


def rng(seed: int, stream: Stream, *keys: int) -> np.random.Generator:
    """A numpy `Generator` of `stream` for run `seed` and `keys`."""
    return np.random.default_rng(sequence(seed, stream, *keys))


def int_seed(seed: int, stream: Stream, *keys: int, bits: int = 63) -> int:
    """A non-negative integer seed of `stream` below 2**bits (63: fits `torch.manual_seed`; 31:
    what LLM servers take). `Stream.LLM_CALL` keeps its legacy value (a draw below 2**31 - 1)."""
    if stream is Stream.LLM_CALL:
        return int(rng(seed, stream, *keys).integers(0, 2**31 - 1))
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in 1..64, not {bits}")
    return int(sequence(seed, stream, *keys).generate_state(1, np.uint64)[0] >> np.uint64(64 - bits))


def torch_generator(seed: int, stream: Stream, *keys: int, device: Any = None) -> Any:
    """A `torch.Generator` of `stream` (on `device`, default CPU), seeded with `int_seed`."""
    import torch  # heavy: only the student's and the embedded teacher's callers need it

    g = torch.Generator() if device is None else torch.Generator(device=device)
    return g.manual_seed(int_seed(seed, stream, *keys))

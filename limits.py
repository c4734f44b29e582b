"""The semantic bounds of every input, one constant each, and the rules for text and names.

The schemas (`lsm.config` for every string and number, the `check()` of each config class for
the rest) refuse a value outside these bounds with a `ConfigError` naming the field. They exist
so that no file can make a command hang or exhaust memory (ticks: 10^11 would print a timeline
for ever), or put unbounded text into every LLM prompt, a file path or a terminal.

Text budgets follow the teacher's prompt: SmolLM2's context is 8,192 tokens and a prompt holds
the context, the question, the options, up to `MAX_SCHEDULED_PER_TICK` events and K neighbour
messages (~4 characters per token): context 4,000 + question 500 + 8 events x 1,000 + options
(64 x 200) stays well inside it.
"""
from __future__ import annotations

import math
import unicodedata

MAX_TICKS = 1_000
"""Ticks of a scenario (a tick is a week, a round, ...; the shipped ones use 8)."""
MAX_SCHEDULED_EVENTS = 1_000
"""Scheduled events of a scenario."""
MAX_SCHEDULED_PER_TICK = 8
"""Scheduled events at one tick (each is shown in every exposed agent's prompt)."""
MAX_TRIGGERS = 64
"""Triggers of a scenario."""
MAX_OPTIONS = 64
"""Options of a categorical action space (a numeric one has at most 101 bins)."""
MAX_CHANNELS = 32
"""Anchored channels of a scenario (each is rated by the teacher at every agent-tick)."""
MAX_AGENTS = 10_000_000
"""Agents of a world (10^6 is the design's target; 10x leaves room, the memory check is the user's)."""
MAX_ATTRIBUTES = 256
"""Attributes of a population."""
MAX_CATEGORIES = 1_000
"""Categories of one categorical attribute."""
MAX_MEAN_DEGREE = 1_000
"""Mean ties of one type per agent (the shipped graph uses 3..8; edges cost memory per agent)."""
MAX_DEGREE = 100_000
"""Cap on one agent's ties of one type."""
MAX_NEIGHBORS_SHOWN = 64
"""K: neighbour messages in one prompt."""
MAX_COUNT = 4_096
"""Any other count in a teacher config: tokens, chunk, memories, attempts."""

MAX_NAME_CHARS = 64
"""Names (scenario, option, channel, trigger, attribute, outlet): they end up in file paths,
HDF5 keys, prompts and terminals."""
MAX_LABEL_CHARS = 200
"""Short texts: a category, a source, a tick length, an option's or channel's description."""
MAX_EVENT_TEXT_CHARS = 1_000
"""An event's text (shown in every exposed agent's prompt)."""
MAX_CONTEXT_CHARS = 4_000
"""A scenario's context, description and any other long text field."""
MAX_QUESTION_CHARS = 500
"""The decision question."""
MAX_SWEEP_VALUES = 101
"""Values of one `--sweep` axis (each is a whole rollout; two axes make a grid of their product)."""
MAX_TEXT_CHARS = 20_000
"""Any string at all in a config, before the field's own bound."""

MAX_ABS_NUMBER = 1e15
"""Any number in a config: finite and at most this large in magnitude (seeds included)."""

BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Bidirectional formatting characters: they reorder what a terminal or prompt shows."""
ALLOWED_CONTROLS = frozenset("\n\t")
"""The only control characters allowed in text (line breaks and tabs of block scalars)."""


def text_problem(value: str, limit: int = MAX_TEXT_CHARS) -> str | None:
    """What is wrong with a text field, or None: too long, a control character (ANSI escapes,
    NUL, carriage returns) or a bidirectional override."""
    if len(value) > limit:
        return f"a text of at most {limit:,} characters (this one has {len(value):,})"
    for i, ch in enumerate(value):
        if ch in ALLOWED_CONTROLS:
            continue
        if ch in BIDI_CONTROLS or unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn"):
            return (f"printable text without control or bidirectional-override characters "
                    f"(found U+{ord(ch):04X} at position {i})")
    return None


def name_problem(value: str, limit: int = MAX_NAME_CHARS) -> str | None:
    """What is wrong with a name, or None: a name is 1..limit printable characters without line
    breaks, tabs, surrounding spaces or path separators (an attribute name is an HDF5 key)."""
    if not value or len(value) > limit:
        return f"a name of 1 to {limit} characters"
    bad = text_problem(value, limit)
    if bad:
        return bad
    if any(ch in "\n\t/\\" for ch in value) or value != value.strip() or value in (".", ".."):
        return "a name without line breaks, tabs, slashes or surrounding spaces"
    return None


def label_problem(value: str, limit: int = MAX_LABEL_CHARS) -> str | None:
    """What is wrong with a short label (a category, an outlet), or None: 1..limit printable
    characters on one line."""
    if not value.strip() or len(value) > limit:
        return f"a label of 1 to {limit} characters"
    bad = text_problem(value, limit)
    if bad:
        return bad
    if "\n" in value or "\t" in value:
        return "a label on one line (no line breaks or tabs)"
    return None


def number_problem(value: float) -> str | None:
    """What is wrong with a number, or None: not finite, or larger than `MAX_ABS_NUMBER`."""
    if isinstance(value, float) and not math.isfinite(value):
        return "a finite number"
    if abs(value) > MAX_ABS_NUMBER:
        return f"a number of magnitude at most {MAX_ABS_NUMBER:g}"
    return None

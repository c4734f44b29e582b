"""Scenario variants: a scenario's events with their valence and credibility drawn anew, so
that their effects can be told apart from the events themselves (`lsm recovery`'s training
variants, the LLM variants corpus of `data_gen/corpus/variants.py`)."""
from __future__ import annotations

from lsm.society import seeds


def jitter_events(data: dict, seed: int, keep_sign: bool = False) -> None:
    """A scenario variant for training: every event's valence and credibility drawn at random,
    so that their effects are identifiable apart from the event (its text, source, framing).

    Scheduled events first, then the triggers' events, in the file's order: credibility ~
    U(0.1, 1) (`Stream.CREDIBILITY_JITTER`, the scheduled events' draws as before valences were
    jittered), valence ~ U(-1, 1) (`Stream.VALENCE_JITTER`), both keyed by `seed`. The sign is
    free by default: an event's push γ · valence · credibility then changes sign across variants
    while its source and framing effects do not, which separates γ from them. `keep_sign`:
    |valence| ~ U(0, 1) with the event's own sign (a neutral event stays 0)."""
    cred = seeds.rng(seed, seeds.Stream.CREDIBILITY_JITTER)
    val = seeds.rng(seed, seeds.Stream.VALENCE_JITTER)
    events = list(data.get("events", [])) + [t["event"] for t in data.get("triggers", []) if isinstance(t.get("event"), dict)]
    for ev in events:
        ev["credibility"] = round(float(cred.uniform(0.1, 1.0)), 3)
        if keep_sign:
            sign = (ev.get("valence", 0.0) > 0) - (ev.get("valence", 0.0) < 0)
            ev["valence"] = round(sign * float(val.uniform(0.0, 1.0)), 3)
        else:
            ev["valence"] = round(float(val.uniform(-1.0, 1.0)), 3)

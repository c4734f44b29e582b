"""The facts that answer a question, chosen from an agent's record, most relevant first.

A question is routed to one of the `QUESTION_KINDS` (`route`); the scaffold of that kind lists
the facts of the record that answer it (`scaffold`), each a complete first-person sentence with
the words an answer must use to state it (`Fact.cues`). The LLM phrases the scaffold; it does
not choose the facts. The scaffold rendered as plain text (`Scaffold.plain`) is the answer of
last resort: every sentence is a fact of the record, so it passes every check
(`narrate.checks`) by construction.

Reasons are what the record holds, said as such: for a student rollout, whom the student paid
attention to (its last layer's attention weights), the events it saw (source and credibility),
the ticks it marked for memory (write salience) and how its channels moved; for a teacher
trace, also the reasoning and the salient memory the teacher wrote. Neither is a motive the
narrator invents.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from lsm.narrate.grounding import action_forms, check_grounding

QUESTION_KINDS = ("why", "change", "influence", "heard", "feel", "would_change", "unknown")
"""why did you decide X at tick t | what changed your mind | who influenced you | what did you hear
or see | how do you feel about <channel> | what would make you change | the record does not say."""

STORY = "story"
"""The scaffold of a narrative: each tick's decision and its first reason."""

ROUTES: tuple[tuple[str, re.Pattern], ...] = (
    ("would_change", re.compile(r"\bwhat would\b|\bwould (?:it take|make|you change|change)\b|\bmake you change\b|"
                                r"\bwhat if\b|\bcould (?:make|change)\b", re.I)),
    ("change", re.compile(r"\bchang(?:e|ed|ing)\b|\bmind\b|\bswitch(?:ed)?\b|\bflip(?:ped)?\b", re.I)),
    ("influence", re.compile(r"\bwho\b|\binfluenc|\bpersuad|\bconvinc|\blisten", re.I)),
    ("heard", re.compile(r"\bhear(?:d)?\b|\bsee\b|\bsaw\b|\bseen\b|\bnews\b|\btold\b|\blearn(?:ed|t)?\b|\bread\b|"
                         r"\bmessages?\b|\bannounce", re.I)),
    ("feel", re.compile(r"\bfeel(?:ing|s)?\b|\bfelt\b|\bopinion\b|\bthink about\b|\bview of\b|\battitude", re.I)),
    ("why", re.compile(r"\bwhy\b|\breasons?\b|\bdecid|\bdecision\b|\bchoo?se\b|\bchose\b|\bpick(?:ed)?\b|"
                       r"\bexplain\b|\bwhat made you\b", re.I)),
)
"""Question kind by its wording, first match wins (a question naming a channel is a `feel`)."""

TICK_ASKED_RX = re.compile(r"\b(?:tick|week|round|day|month)\s*#?\s*(\d+)", re.I)
LAST_RX = re.compile(r"\b(?:last|latest|final|most recent|now|current(?:ly)?)\b", re.I)
FIRST_RX = re.compile(r"\b(?:first|start|beginning)\b", re.I)

TIE_WORDS = {"household": "someone in my household", "friend": "my friend", "professional": "a colleague",
             "weak_tie": "an acquaintance", "media": "someone I follow", "none": "someone"}
"""How the narrator names a tie (`society.world.graph.EDGE_TYPES`, or none in the graph)."""

MEMORY_SALIENCE = 0.5
"""A student tick whose memory write gate is at least this is told as "marked to remember"."""
MAX_QUOTE_CHARS = 160
"""The longest quotation of a teacher's recorded reasoning or memory, or of an event's text."""


@dataclass(frozen=True)
class Fact:
    kind: str
    """decision, change, neighbour, self, event, memory, feeling, reasoning, alternative, none."""
    tick: int | None
    text: str
    """One complete first-person sentence, true of the record."""
    cues: tuple[tuple[str, ...], ...]
    """Words that state the fact: an answer states it when it holds one word of every group
    (whole words, any case), e.g. (("tick 2", "week 2"), ("wait", "waited", "waiting"))."""

    def stated_in(self, text: str) -> bool:
        return all(any(_has(text, w) for w in group) for group in self.cues)


@dataclass
class Scaffold:
    question: str | None
    kind: str
    """One of `QUESTION_KINDS`, or `STORY`."""
    tick: int | None
    """The tick the question is about (None: the whole record)."""
    facts: list[Fact]
    """In order of relevance: facts[:lead] answer the question, the rest give its reasons."""
    lead: int = 1
    terms: set[str] = field(default_factory=set)
    """Words of the record a reason may use (names, sources, channels, quoted texts): `checks.attribution`."""

    @property
    def reasons(self) -> list[Fact]:
        return self.facts[self.lead:]

    def plain(self, top: int = 4) -> str:
        """The scaffold as plain first-person text: its first `top` facts, one sentence each."""
        return " ".join(f.text for f in self.facts[:max(top, self.lead)])


def _has(text: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.I) is not None


def readable(channel: str) -> str:
    """trust_institutions -> "trust in institutions", perceived_risk -> "perceived risk"."""
    words = channel.split("_")
    return "trust in " + " ".join(words[1:]) if words[0] == "trust" and len(words) > 1 else " ".join(words)


def _tick_cue(t: int) -> tuple[str, ...]:
    return (f"tick {t}", f"week {t}", f"round {t}")


BIN_RX = re.compile(r"(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)")
"""A numeric action's bin label, e.g. '20-30'."""


def decided(decision: str) -> str:
    """'decided to wait', or for a numeric bin such as '20-30': 'picked a number between 20 and 30'."""
    m = BIN_RX.fullmatch(decision)
    return f"picked a number between {m.group(1)} and {m.group(2)}" if m else f"decided to {decision.replace('_', ' ')}"


def _decision_cue(decision: str) -> tuple[str, ...]:
    m = BIN_RX.fullmatch(decision)
    return (m.group(1), m.group(2)) if m else tuple(action_forms(decision))


def _pct(p: float) -> int:
    return int(round(p * 100))


def _quote(text: str) -> str:
    """The first sentence of a recorded text, at most `MAX_QUOTE_CHARS`, without quotation marks."""
    text = re.sub(r"\s+", " ", text.replace('"', "'")).strip()
    m = re.search(r"(?<=[.!?])\s", text)
    text = text[: m.start()] if m else text
    if len(text) > MAX_QUOTE_CHARS:
        text = text[:MAX_QUOTE_CHARS].rsplit(" ", 1)[0] + " ..."
    return text.rstrip(" .")


def _first_name(name: str) -> str:
    return name.split()[0] if name.split() else name


class _Facts:
    """Every fact of one record, by tick and kind; each is checked against the record once."""

    def __init__(self, record):
        self.record = record
        self.by_tick = {t.tick: t for t in record.ticks}
        self.ticks = [t.tick for t in record.ticks]
        self.student = record.kind != "teacher_trace"

    def _ok(self, fact: Fact) -> list[Fact]:
        """[fact] if it passes the grounding check on its own, else [] (a quotation the record's
        own reasoning cannot carry, e.g. one naming another tick, is left out)."""
        return [] if check_grounding(fact.text, self.record) else [fact]

    def decision(self, t: int) -> list[Fact]:
        r = self.by_tick[t]
        return self._ok(Fact("decision", t, f"In tick {t}, I {decided(r.decision)} ({_pct(r.decision_probs[r.decision])}% likely).",
                             (_tick_cue(t), _decision_cue(r.decision))))

    def neighbours(self, t: int, top: int = 2) -> list[Fact]:
        r = self.by_tick[t]
        out: list[Fact] = []
        shown = [a for a in r.attention if a["tie"] != "self"]
        me = next((a for a in r.attention if a["tie"] == "self"), None)
        if self.student and me is not None and (not shown or me["weight"] >= shown[0]["weight"]):
            out += self._ok(Fact("self", t, f"In tick {t}, I paid most attention to my own earlier view "
                                            f"({_pct(me['weight'])}% of my attention).", (_tick_cue(t), ("own", "myself"))))
        for a in shown[:top]:
            theirs = f"who had decided to {a['their_decision'].replace('_', ' ')}" if a["their_decision"] else "who had not decided yet"
            name, tie = a["name"], TIE_WORDS.get(a["tie"], "someone")
            if self.student:
                text = f"In tick {t}, I paid attention to {name}, {tie}, {theirs} ({_pct(a['weight'])}% of my attention)."
            else:
                text = f"In tick {t}, I heard from {name}, {tie}, {theirs}."
            out += self._ok(Fact("neighbour", t, text, ((name, _first_name(name)),)))
        return out

    def events(self, t: int, top: int = 2) -> list[Fact]:
        r = self.by_tick[t]
        seen = sorted(zip(r.events, r.event_sources or [("the news", 0.5)] * len(r.events)), key=lambda e: -e[1][1])
        return [f for text, (source, cred) in seen[:top]
                for f in self._ok(Fact("event", t, f'In tick {t}, I saw "{_quote(text)}" from {source} '
                                                   f"(credibility {round(cred * 10)}/10).", ((source,),)))]

    def memory(self, t: int) -> list[Fact]:
        r = self.by_tick[t]
        if not self.student:
            quote = _quote(r.memory_text)
            return self._ok(Fact("memory", t, f'In tick {t}, I noted for myself: "{quote}".', (_telling(quote, r),))) \
                if r.memory_text.strip() else []
        if r.salience < MEMORY_SALIENCE:
            return []
        return self._ok(Fact("memory", t, f"In tick {t}, I marked what happened as worth remembering "
                                          f"(strength {round(r.salience * 10)}/10).", (("remember", "remembering", "memory"),)))

    def reasoning(self, t: int) -> list[Fact]:
        r = self.by_tick[t]
        if self.student or not r.reasoning.strip():
            return []
        quote = _quote(r.reasoning)
        return self._ok(Fact("reasoning", t, f'In tick {t}, my reasoning was: "{quote}".', (_telling(quote, r),)))

    def feelings(self, t: int, channels: list[str] | None = None, top: int = 2) -> list[Fact]:
        """How channels stood at tick t, those that moved most since the tick before first."""
        r = self.by_tick[t]
        before = self.by_tick.get(self.ticks[self.ticks.index(t) - 1]) if self.ticks.index(t) > 0 else None
        names = channels or sorted(r.channels, key=lambda c: -abs(r.channels[c] - (before.channels[c] if before else r.channels[c])))
        out = []
        for c in names[:top] if channels is None else names:
            now = round(r.channels[c] * 10)
            if before is not None and round(before.channels[c] * 10) != now:
                was = round(before.channels[c] * 10)
                text = f"In tick {t}, my {readable(c)} was {now}/10, {'up' if now > was else 'down'} from {was}/10 in tick {before.tick}."
            else:
                text = f"In tick {t}, my {readable(c)} was {now}/10."
            out += self._ok(Fact("feeling", t, text, ((readable(c),),)))  # the whole name: "social" alone is not "social proof"
        return out

    def alternative(self, t: int) -> list[Fact]:
        r = self.by_tick[t]
        ranked = sorted(r.decision_probs.items(), key=lambda kv: -kv[1])
        others = [(a, p) for a, p in ranked if a != r.decision]
        if not others:
            return []
        a, p = others[0]
        return self._ok(Fact("alternative", t, f"In tick {t}, I was {_pct(r.decision_probs[r.decision])}% likely to "
                                               f"{_bare(r.decision)}, and my next most likely choice was to {_bare(a)} ({_pct(p)}%).",
                             (_tick_cue(t), _decision_cue(a))))

    def reasons(self, t: int) -> list[Fact]:
        """The reasons the record holds for tick t's decision, most telling first."""
        return self.reasoning(t) + self.neighbours(t) + self.events(t) + self.memory(t) + self.feelings(t, top=1)


COMMON = frozenset("""about after again also because before being could every from have into just more most much only other
people really should since some still than that their them then there these they thing think this those through very
what when where which while will with would your""".split())


def _telling(quote: str, r) -> tuple[str, ...]:
    """The words that show a quotation was used: its words of five letters or more, other than
    common words and the decision's own forms (a quote of "I will wait" is not stated by "wait")."""
    own = {f for label in r.decision_probs for f in action_forms(label)}
    words = [w for w in re.findall(r"[A-Za-z]+", quote.lower()) if len(w) >= 5 and w not in COMMON and w not in own]
    return tuple(dict.fromkeys(words)) or (quote,)


def _bare(decision: str) -> str:
    """'wait'; a numeric bin '20-30': 'pick a number between 20 and 30'."""
    return decided(decision).replace("decided to ", "", 1).replace("picked", "pick", 1)


def asked_tick(question: str, record) -> int | None:
    """The tick a question names ("tick 2", "week 2"), the first or last ("last week"), else None."""
    ticks = [t.tick for t in record.ticks]
    m = TICK_ASKED_RX.search(question)
    if m:
        return int(m.group(1))
    if FIRST_RX.search(question) and ticks:
        return ticks[0]
    if LAST_RX.search(question) and ticks:
        return ticks[-1]
    return None


def asked_channels(question: str, record) -> list[str]:
    """Channels a question names, by any of their words of four letters or more ("risk", "trust in institutions")."""
    channels = list(record.ticks[0].channels) if record.ticks else []
    full = [c for c in channels if _has(question, readable(c)) or _has(question, c)]
    if full:
        return full
    return [c for c in channels if any(len(w) > 3 and w != "trust" and _has(question, w) for w in readable(c).split())] or \
           [c for c in channels if c.startswith("trust") and _has(question, "trust")][:1]


def route(question: str, record) -> str:
    """The question's kind (`QUESTION_KINDS`): by its wording (`ROUTES`), a question naming a
    channel is a `feel`, naming a decision is a `why`; else `unknown`."""
    for kind, rx in ROUTES:
        if rx.search(question):
            return kind
    if asked_channels(question, record):
        return "feel"
    if any(_has(question, f) for a in record.actions for f in action_forms(a)):
        return "why"
    return "unknown"


def _terms(record) -> set[str]:
    """Words of the record a stated reason may rest on: names, ties, sources, channels, the
    decisions, and the words of the events' texts and of the teacher's reasoning and memory."""
    words: set[str] = set()
    for r in record.ticks:
        for a in r.attention:
            words.update(a["name"].lower().replace(".", "").split())
            words.update(TIE_WORDS.get(a["tie"], a["tie"]).lower().split())
        for text in [*r.events, r.reasoning, r.memory_text, *(s for s, _ in r.event_sources)]:
            words.update(re.findall(r"[a-z]+", text.lower()))
        for c in r.channels:
            words.update(readable(c).lower().split())
    for a in record.actions:
        words.update(action_forms(a))
    return words


def scaffold(record, question: str | None) -> Scaffold:
    """The facts answering `question` (None: a narrative of every tick), most relevant first."""
    facts = _Facts(record)
    terms = _terms(record)
    if not record.ticks:
        return Scaffold(question, "unknown", None, [Fact("none", None, "My record holds no tick in which I decided.",
                                                         (("record",),))], terms=terms)
    ticks = facts.ticks
    if question is None:
        story = [f for t in ticks for f in facts.decision(t) + facts.reasons(t)[:1]]
        return Scaffold(None, STORY, None, story, lead=len(story), terms=terms)
    kind, t = route(question, record), asked_tick(question, record)
    if t is not None and t not in facts.by_tick:
        return Scaffold(question, "unknown", t, [Fact("none", None, f"My record does not say: it holds ticks {ticks[0]} to {ticks[-1]}.",
                                                      (("record",), ("does not say", "doesn't say", "not say")))], terms=terms)
    if kind == "why":
        if t is None:  # "why did you vaccinate?": the last tick of that decision, else the last tick
            named = [r.tick for r in record.ticks if any(_has(question, f) for f in action_forms(r.decision))]
            t = named[-1] if named else ticks[-1]
        return Scaffold(question, kind, t, facts.decision(t) + facts.reasons(t), terms=terms)
    t = ticks[-1] if t is None else t
    if kind == "change":
        upto = [r for r in record.ticks if r.tick <= t]
        flips = [b.tick for a, b in zip(upto, upto[1:]) if a.decision != b.decision]
        if flips:
            c = flips[-1]
            was = facts.by_tick[ticks[ticks.index(c) - 1]]
            now = facts.by_tick[c]
            lead = facts._ok(Fact("change", c, f"In tick {c}, I changed my mind: after I {decided(was.decision)} in tick {was.tick}, "
                                               f"I {decided(now.decision)} ({_pct(now.decision_probs[now.decision])}% likely).",
                                  (_tick_cue(c), ("changed", "change", "switched", "instead")), ))
            return Scaffold(question, kind, c, lead + facts.reasons(c), terms=terms)
        first = upto[0]
        lead = facts._ok(Fact("change", None, f"I did not change my mind: from tick {first.tick} to tick {t}, I "
                                              f"{decided(first.decision)} every time.",
                              (("not change", "never changed", "didn't change", "did not change", "same"),)))
        return Scaffold(question, kind, t, lead + facts.reasons(t), terms=terms)
    if kind == "influence":
        lead_facts = facts.neighbours(t, top=3)
        if not lead_facts:
            lead_facts = facts._ok(Fact("none", t, f"In tick {t}, no one's message reached me.", (("no one", "nobody"),)))
        return Scaffold(question, kind, t, lead_facts + facts.events(t) + facts.decision(t), lead=1, terms=terms)
    if kind == "heard":
        seen = facts.events(t) + facts.neighbours(t)
        seen = [f for f in seen if f.kind != "self"]
        if not seen:
            seen = facts._ok(Fact("none", t, f"In tick {t}, I saw no news and heard from no one.", (("no news", "no one"),)))
        return Scaffold(question, kind, t, seen + facts.decision(t), lead=1, terms=terms)
    if kind == "feel":
        chosen = asked_channels(question, record)
        return Scaffold(question, kind, t, facts.feelings(t, chosen or None, top=2) + facts.decision(t),
                        lead=max(1, len(chosen)) if chosen else 1, terms=terms)
    if kind == "would_change":
        others = [f for f in facts.neighbours(t) if f.kind == "neighbour"]
        return Scaffold(question, kind, t, facts.alternative(t) + others + facts.events(t), terms=terms)
    return Scaffold(question, "unknown", t, [Fact("none", None, "My record does not say: it holds what I decided, what I saw "
                                                               "and heard, and how I felt, tick by tick.",
                                                  (("record",), ("does not say", "doesn't say", "not say")))], terms=terms)

"""The four checks of a narrated answer, each a verdict a reader would agree with.

- **grounded**: every tick, decision and number it names matches the record (`grounding`);
- **relevant**: it states the facts its scaffold put first (`Scaffold.lead`: e.g. the asked
  tick's decision) and, where the scaffold holds reasons, at least one of them;
- **attributed**: every cause it gives ("because ...", "due to ...", "that is why") names
  something in the record: a person heard, an event's source, a channel, a memory, the
  recorded reasoning (`Fact.cues` of any of the scaffold's facts); and most words of the cause
  are the record's own (`Scaffold.terms`, `ATTRIBUTION_SHARE`), so "because my friend Ann said the
  vaccine causes organ rejection" fails where the record holds no such words. Nor may the
  answer as a whole bring in much that is not the record's: at most `FOREIGN_SHARE` of its
  content words may be foreign to it ("a doctor gone to the moon" is an invented claim, with or
  without a "because");
- **complete**: not empty, every sentence ended, no dangling "because", within
  `MIN_WORDS`..`MAX_WORDS` words (per tick for a narrative).

An answer passes when it passes all four (`Verdict.passed`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from lsm.narrate.grounding import SENTENCE_RX, GroundingIssue, check_grounding
from lsm.narrate.scaffold import STORY, Fact, Scaffold

CHECKS = ("grounded", "relevant", "attributed", "complete")
MIN_WORDS = 6
MAX_WORDS = 90
"""Length bounds of an answer (a narrative: per tick it tells)."""
ATTRIBUTION_SHARE = 0.6
"""The least share of a cause's content words that the record (or `PLAIN_WORDS`) holds."""
FOREIGN_SHARE = 0.25
"""The most share of an answer's words that may be foreign to the record (neither its terms nor
`PLAIN_WORDS`): room for phrasing ("I was unsure"), none for a story of its own."""

CAUSE_RX = re.compile(r"\b(?:because(?: of)?|due to|thanks to|as a result of|owing to|since(?! tick| week| round| then)|"
                      r"that(?:'s| is| was) why|which (?:is|was) why|which made me|made me|led me to|so that)\b", re.I)
CLAUSE_END_RX = re.compile(r"[;:.!?]|\b(?:but|although|though|while|whereas)\b", re.I)
WORD_RX = re.compile(r"[A-Za-z][A-Za-z']+")
ENDED_RX = re.compile(r"[.!?][\"')\]]*$")
PLAIN_WORDS = frozenset("""
a about after again all also am an and any are as at attention be been before being but by can could
did do does done during each even every felt feel feeling few for from had has have having he her
him his how i i'm if in into is it its just kept last least less like made make many me more most much
my myself no not now of on one only or other others our out over own paid pay people person said
saw say see seemed seen she should so some someone something still such than that the their them
then there these they thing things think this those thought through tick time to told too up us very
was way we week were what when which while who why will with would you your round heard hear
decided decide decision choice chose choose likely sure view earlier worth remembering remember memory
strength credibility message messages news reached reach someone colleague acquaintance household friend
follow wanted want believe believed trust reasoning noted record says change changed mind instead due because
since next
""".split())
"""Function words and the scaffold's own words, which any cause may use."""


@dataclass
class Verdict:
    grounded: bool
    relevant: bool
    attributed: bool
    complete: bool
    problems: list[str] = field(default_factory=list)
    """Why each failed check failed, one line each, e.g. "relevant: does not state tick 2's decision"."""
    issues: list[GroundingIssue] = field(default_factory=list)
    """The grounding check's own findings."""

    @property
    def passed(self) -> bool:
        return self.grounded and self.relevant and self.attributed and self.complete

    def as_dict(self) -> dict[str, bool]:
        return {c: getattr(self, c) for c in CHECKS}


def relevance(text: str, sc: Scaffold) -> list[str]:
    """What the answer leaves out of what its scaffold put first."""
    missing = [f"does not state: {f.text}" for f in sc.facts[:sc.lead] if not f.stated_in(text)]
    if sc.kind != STORY and sc.reasons and sc.kind in ("why", "change") and not any(f.stated_in(text) for f in sc.reasons):
        missing.append("gives none of the record's reasons (" + "; ".join(_cue_words(f) for f in sc.reasons[:3]) + ")")
    return missing


def _cue_words(f: Fact) -> str:
    return " + ".join("/".join(g[:2]) for g in f.cues)


def causes(text: str) -> list[str]:
    """Each cause the text gives: the words after a causal marker, to the end of its clause."""
    out = []
    for m in CAUSE_RX.finditer(text):
        rest = text[m.end():]
        end = CLAUSE_END_RX.search(rest)
        out.append(rest[: end.start()] if end else rest)
    return out


def attribution(text: str, sc: Scaffold) -> list[str]:
    """Causes that name nothing in the record, or whose words mostly are not the record's."""
    problems = []
    for cause in causes(text):
        words = [w.lower() for w in WORD_RX.findall(cause)]
        content = [w for w in words if w not in PLAIN_WORDS]
        named = any(f.stated_in(cause) for f in sc.facts if f.kind != "none")
        known = sum(_known(w, sc.terms) for w in content)
        if not words:
            problems.append("a cause with nothing after it")
        elif not named:
            problems.append(f"cause not in the record: \"{cause.strip()}\"")
        elif content and known / len(content) < ATTRIBUTION_SHARE:
            foreign = [w for w in content if not _known(w, sc.terms)]
            problems.append(f"cause with words not in the record ({', '.join(foreign[:5])}): \"{cause.strip()}\"")
    words = WORD_RX.findall(text)
    foreign = foreign_words(text, sc)
    if words and len(foreign) / len(words) > FOREIGN_SHARE:
        problems.append(f"{len(foreign)} of its {len(words)} words are not the record's ({', '.join(dict.fromkeys(foreign[:8]))})")
    return problems


def _known(word: str, terms: set[str]) -> bool:
    """The word, or its stem with a plural, past or progressive ending taken off, is the record's."""
    if word in terms or word in PLAIN_WORDS:
        return True
    for end in ("s", "es", "ed", "d", "ing", "ly"):
        stem = word[: -len(end)] if word.endswith(end) and len(word) - len(end) >= 3 else None
        if stem and (stem in terms or stem in PLAIN_WORDS or stem + "e" in terms or stem + "e" in PLAIN_WORDS):
            return True
    return False


def foreign_words(text: str, sc: Scaffold) -> list[str]:
    """The answer's content words that neither the record nor plain phrasing holds (the
    question's own words too are foreign: "I love food" answers nothing the record holds)."""
    return [w for w in (w.lower() for w in WORD_RX.findall(text)) if not _known(w, sc.terms)]


def completeness(text: str, parts: int = 1) -> list[str]:
    """Why the text is not a complete answer of `parts` ticks' length (none: it is)."""
    text = text.strip()
    if not text:
        return ["empty"]
    problems = []
    n = len(WORD_RX.findall(text))
    if n < MIN_WORDS:
        problems.append(f"{n} words, fewer than {MIN_WORDS}")
    if n > MAX_WORDS * parts:
        problems.append(f"{n} words, more than {MAX_WORDS * parts}")
    if not ENDED_RX.search(text):
        problems.append(f"cut off: \"...{text[-40:]}\"")
    for s in (s.strip() for s in SENTENCE_RX.split(text) if s.strip()):
        tail = re.search(r"\b(?:because|since|due to|as|and|but|so|to|of|the|a|my|with)\s*[.!?]?$", s, re.I)
        if tail:
            problems.append(f"sentence left hanging: \"{s[-40:]}\"")
        elif re.search(r"\bbecause\s+(?:\S+\s+){0,1}\S+[.!?]$", s, re.I):
            problems.append(f"a \"because\" with no reason after it: \"{s[-40:]}\"")
    return problems


def check(text: str, record, sc: Scaffold) -> Verdict:
    """All four checks of `text` as the answer to `sc`'s question about `record`."""
    issues = check_grounding(text, record)
    rel, att = relevance(text, sc), attribution(text, sc)
    comp = completeness(text, parts=max(1, len({f.tick for f in sc.facts})) if sc.kind == STORY else 1)
    problems = ([f"grounded: {i.detail}" for i in issues] + [f"relevant: {p}" for p in rel] + [f"attributed: {p}" for p in att]
                + [f"complete: {p}" for p in comp])
    return Verdict(not issues, not rel, not att, not comp, problems, issues)

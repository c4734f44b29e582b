"""JSON-schema constrained decoding for local transformers models.

A schema of the subset the teacher uses (objects with ordered, all-required properties;
strings with `maxLength` and an optional `pattern`; string `enum`s; integers with
`minimum`/`maximum`; booleans) compiles to a *template*: forced literal token runs (keys,
quotes, punctuation) alternating with slots the model fills — free text (any token without a
quote, backslash or control character, closed by the `"` token) or a choice among token
sequences (enum values, integers in range), walked as a trie. `TemplateWalker` walks it for each row of the decode loop
(`decode_loop.py`): at each step it masks every token the template does not allow, so every
finished answer parses and satisfies the schema.

A string's `pattern` (JSON schema: the text contains a match, `re.search`) is kept by closing
the text only once what it holds so far matches, opening it with a token that holds a letter
(so that it starts as words rather than as the digits the fields around it are made of), and,
on its last token, allowing only tokens that match on their own. This holds for patterns that
stay matched as text is added (the teacher's "a word of two letters somewhere"); the agent
loop validates the answer either way.

    walker = TemplateWalker(compile_schema(schema, tokenizer), tok.eos_token_id, FreeVocab.of(tokenizer))
    state = walker.start()
    mask = walker.allowed([state], V)  # (1, V) bool; then walker.advance(state, token taken)
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import torch

MAX_CHOICES = 2048


class UnsupportedSchema(ValueError):
    """The schema uses a feature the template compiler does not handle."""


@dataclass
class Literal:
    ids: list[int]


@dataclass
class FreeText:
    max_tokens: int
    pattern: str | None = None
    """The schema's `pattern`: the text may close only once it contains a match."""


@dataclass
class Choice:
    values: list[str]
    trie: dict = field(default_factory=dict)
    """token -> child node; a node is a dict, key None marks the end of a value."""


Segment = Literal | FreeText | Choice


def _enc(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def compile_schema(schema: dict[str, Any], tokenizer, chars_per_token: float = 4.0) -> list[Segment]:
    """Flatten a JSON schema into template segments (adjacent literals merged)."""
    pieces: list[str | FreeText | list[str]] = []

    def emit(node: dict[str, Any], where: str) -> None:
        if "enum" in node:
            if node.get("type", "string") == "string":
                pieces.extend(['"', [str(v) for v in node["enum"]], '"'])
            else:
                pieces.append([json.dumps(v) for v in node["enum"]])
            return
        kind = node.get("type")
        if kind == "object":
            props = node.get("properties", {})
            pieces.append("{")
            for i, (key, sub) in enumerate(props.items()):
                pieces.append(("" if i == 0 else ", ") + f'"{key}": ')
                emit(sub, f"{where}.{key}")
            pieces.append("}")
        elif kind == "string":
            n = max(1, int(node.get("maxLength", 400) / chars_per_token))
            pattern = node.get("pattern")
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise UnsupportedSchema(f"{where}: pattern {pattern!r} is not a regular expression ({err})") from None
            pieces.extend(['"', FreeText(n, pattern), '"'])
        elif kind == "integer":
            lo, hi = node.get("minimum"), node.get("maximum")
            if lo is None or hi is None or hi - lo + 1 > MAX_CHOICES:
                raise UnsupportedSchema(f"{where}: integers need minimum and maximum (at most {MAX_CHOICES} values)")
            pieces.append([str(v) for v in range(int(lo), int(hi) + 1)])
        elif kind == "boolean":
            pieces.append(["true", "false"])
        else:
            raise UnsupportedSchema(f"{where}: type {kind!r} is not supported by the constrained decoder")

    emit(schema, "$")
    # Merge consecutive literal strings; a FreeText's closing quote is emitted by the model.
    segments: list[Segment] = []
    buf = ""
    i = 0
    while i < len(pieces):
        p = pieces[i]
        if isinstance(p, FreeText):
            if buf:
                segments.append(Literal(_enc(tokenizer, buf)))
                buf = ""
            segments.append(p)
            i += 2  # the closing quote belongs to the FreeText slot
            continue
        if isinstance(p, list):
            if buf:
                segments.append(Literal(_enc(tokenizer, buf)))
                buf = ""
            ch = Choice(values=p)
            for v in p:
                node = ch.trie
                for t in _enc(tokenizer, v):
                    node = node.setdefault(t, {})
                node[None] = v
            segments.append(ch)
        else:
            buf += p
        i += 1
    if buf:
        segments.append(Literal(_enc(tokenizer, buf)))
    for a, b in zip(segments, segments[1:]):
        if isinstance(a, Choice) and not isinstance(b, Literal):
            raise UnsupportedSchema("a choice must be followed by literal text")
    return segments


@dataclass
class FreeVocab:
    """What free text may hold, per token of the vocabulary (built once per tokenizer)."""

    allowed: torch.Tensor
    """(V,) bool: tokens free text may hold (no quote, backslash, control or broken character)."""
    quote: int
    """The closing double quote's token."""
    texts: list[str]
    """(V,) each token's own text."""
    letter: torch.Tensor
    """(V,) bool: allowed tokens holding a letter A-Z or a-z (a patterned text opens with one)."""
    _matching: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, tokenizer) -> "FreeVocab":
        vocab = len(tokenizer)
        allowed = torch.zeros(vocab, dtype=torch.bool)
        special = set(tokenizer.all_special_ids)
        texts = [tokenizer.decode([i]) for i in range(vocab)]
        for i, s in enumerate(texts):
            if i not in special and s and '"' not in s and "\\" not in s and "\ufffd" not in s and all(c >= " " for c in s):
                allowed[i] = True
        quote = _enc(tokenizer, '"')
        if len(quote) != 1:
            raise UnsupportedSchema("the tokenizer has no single-token double quote")
        letter = allowed & torch.tensor([re.search("[A-Za-z]", s) is not None for s in texts])
        return cls(allowed, quote[0], texts, letter)

    def matching(self, pattern: str) -> torch.Tensor:
        """(V,) bool: allowed tokens whose own text contains a match of `pattern`."""
        if pattern not in self._matching:
            rx = re.compile(pattern)
            self._matching[pattern] = self.allowed & torch.tensor([rx.search(s) is not None for s in self.texts])
        return self._matching[pattern]


@dataclass
class _RowState:
    seg: int = 0
    pos: int = 0  # offset in a Literal / tokens used in a FreeText
    node: dict | None = None  # current trie node in a Choice
    done: bool = False
    text: str = ""  # a patterned FreeText's text so far
    matched: bool = True  # whether that text matches its pattern (True for texts without one)


class TemplateWalker:
    """Walks the template for each row of a decode loop: `start` a row, `allowed` gives the
    tokens each row may take next, `advance` consumes the one it took."""

    def __init__(self, template: list[Segment], eos_id: int, vocab: FreeVocab):
        self.template, self.eos_id = template, eos_id
        self.vocab, self.free_mask, self.quote_id = vocab, vocab.allowed, vocab.quote

    def start(self) -> _RowState:
        r = _RowState()
        self._enter(r)
        return r

    # state transitions ------------------------------------------------------------------
    def _enter(self, r: _RowState) -> None:
        """Normalise a state that points at the start of a segment."""
        if r.seg >= len(self.template):
            r.done = True
            return
        seg = self.template[r.seg]
        if isinstance(seg, Choice) and r.node is None:
            r.node = seg.trie
        if isinstance(seg, FreeText):
            r.text, r.matched = "", seg.pattern is None

    def advance(self, r: _RowState, token: int) -> None:
        if r.done:
            return
        seg = self.template[r.seg]
        if isinstance(seg, Literal):
            r.pos += 1
            if r.pos >= len(seg.ids):
                r.seg, r.pos = r.seg + 1, 0
                self._enter(r)
        elif isinstance(seg, FreeText):
            if token == self.quote_id:
                r.seg, r.pos = r.seg + 1, 0
                self._enter(r)
            else:
                r.pos += 1
                if not r.matched:
                    r.text += self.vocab.texts[token]
                    r.matched = re.search(seg.pattern or "", r.text) is not None
        else:  # Choice
            assert r.node is not None
            if token in r.node:
                r.node = r.node[token]
                if set(r.node) == {None}:  # a complete value with no longer alternative
                    r.seg, r.node = r.seg + 1, None
                    self._enter(r)
            else:  # the token ends the value: it is the first token of the next literal
                r.seg, r.node = r.seg + 1, None
                self._enter(r)
                self.advance(r, token)

    def _allowed(self, r: _RowState) -> torch.Tensor | list[int]:
        if r.done:
            return [self.eos_id]
        seg = self.template[r.seg]
        if isinstance(seg, Literal):
            return [seg.ids[r.pos]]
        if isinstance(seg, FreeText):
            if r.pos >= seg.max_tokens:
                return [self.quote_id]
            if not r.matched:  # a patterned text that does not match yet: it may not close
                assert seg.pattern is not None
                if r.pos == 0:
                    return self.vocab.letter
                last = self.vocab.matching(seg.pattern)
                return last if r.pos == seg.max_tokens - 1 and bool(last.any()) else self.free_mask
            m = self.free_mask.clone()
            m[self.quote_id] = True
            return m
        assert r.node is not None
        allowed = [t for t in r.node if t is not None]
        if None in r.node:  # may end here: the next literal's first token
            nxt = self.template[r.seg + 1]
            assert isinstance(nxt, Literal)
            allowed.append(nxt.ids[0])
        return allowed

    def allowed(self, rows: list[_RowState], vocab: int) -> torch.Tensor:
        """(B, vocab) bool: the tokens each row may take next."""
        mask = torch.zeros((len(rows), vocab), dtype=torch.bool)
        for b, r in enumerate(rows):
            a = self._allowed(r)
            if isinstance(a, torch.Tensor):
                mask[b, : a.shape[0]] = a[:vocab]
            else:
                mask[b, a] = True
        return mask

"""JSON-schema constrained decoding for local transformers models.

A schema of the subset the teacher uses (objects with ordered, all-required properties;
strings with `maxLength`; string `enum`s; integers with `minimum`/`maximum`; booleans) compiles
to a *template*: forced literal token runs (keys, quotes, punctuation) alternating with slots
the model fills — free text (any token without a quote, backslash or control character,
closed by the `"` token) or a choice among token sequences (enum values, integers in range),
walked as a trie. `SchemaLogitsProcessor` plugs the template into `model.generate`: at each
step it masks every token the template does not allow, so every finished answer parses and
satisfies the schema (free texts can still be empty; the agent loop validates meaning).

    template = compile_schema(schema, tokenizer)
    proc = SchemaLogitsProcessor(template, batch_size=B, prompt_len=L, eos_id=tok.eos_token_id)
    model.generate(..., logits_processor=LogitsProcessorList([proc]))
"""
from __future__ import annotations

import json
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
            pieces.extend(['"', FreeText(n), '"'])
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


def free_text_mask(tokenizer) -> tuple[torch.Tensor, int]:
    """(allowed [V] bool for free text, id of the closing-quote token)."""
    vocab = len(tokenizer)
    allowed = torch.zeros(vocab, dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    for i in range(vocab):
        if i in special:
            continue
        s = tokenizer.decode([i])
        if s and '"' not in s and "\\" not in s and "\ufffd" not in s and all(c >= " " for c in s):
            allowed[i] = True
    quote = _enc(tokenizer, '"')
    if len(quote) != 1:
        raise UnsupportedSchema("the tokenizer has no single-token double quote")
    return allowed, quote[0]


@dataclass
class _RowState:
    seg: int = 0
    pos: int = 0  # offset in a Literal / tokens used in a FreeText
    node: dict | None = None  # current trie node in a Choice
    done: bool = False


class SchemaLogitsProcessor:
    """A `transformers` logits processor that walks the template for every row of a batch."""

    def __init__(self, template: list[Segment], batch_size: int, prompt_len: int, eos_id: int,
                 free_mask: torch.Tensor, quote_id: int):
        self.template, self.prompt_len, self.eos_id = template, prompt_len, eos_id
        self.free_mask, self.quote_id = free_mask, quote_id
        self.rows = [_RowState() for _ in range(batch_size)]
        for r in self.rows:
            self._enter(r)

    # state transitions ------------------------------------------------------------------
    def _enter(self, r: _RowState) -> None:
        """Normalise a state that points at the start of a segment."""
        if r.seg >= len(self.template):
            r.done = True
            return
        seg = self.template[r.seg]
        if isinstance(seg, Choice) and r.node is None:
            r.node = seg.trie

    def _advance(self, r: _RowState, token: int) -> None:
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
                self._advance(r, token)

    def _allowed(self, r: _RowState, vocab: int) -> torch.Tensor | list[int]:
        if r.done:
            return [self.eos_id]
        seg = self.template[r.seg]
        if isinstance(seg, Literal):
            return [seg.ids[r.pos]]
        if isinstance(seg, FreeText):
            if r.pos >= seg.max_tokens:
                return [self.quote_id]
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

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # input_ids (B, L) holds the prompt plus what was generated so far; consume the last token.
        if input_ids.shape[1] > self.prompt_len:
            last = input_ids[:, -1].tolist()
            for r, tok in zip(self.rows, last):
                self._advance(r, tok)
        vocab = scores.shape[-1]
        mask = torch.zeros_like(scores, dtype=torch.bool)  # True = allowed
        for b, r in enumerate(self.rows):
            allowed = self._allowed(r, vocab)
            if isinstance(allowed, torch.Tensor):
                mask[b, : allowed.shape[0]] = allowed[:vocab]
            else:
                mask[b, allowed] = True
        return scores.masked_fill(~mask, float("-inf"))

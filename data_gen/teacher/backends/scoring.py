"""Exact option scoring in token space: one rule for every backend that can see token ids.

The rule (docs/design.md §4; options scored as continuations of an answer prefix, see
docs/results.md#what-the-embedded-teacher-can-and-cannot-do):

1. **Render** a conversation into token ids with the model's own chat template. A final
   assistant message is a *prefix* the model continues: the turns before it are rendered with
   the generation prompt (the template's assistant header), and the prefix's own tokens follow.
   The prefix never goes through the template, so a template that trims message content
   (Llama-3 style `| trim`) cannot drop its trailing space.
2. **Join** each option's ids, tokenised on its own, to the prompt's ids: `"... rating of "`
   + `"7"` is the prompt's tokens then the tokens of `"7"`, even where the tokenizer would merge
   the space and the digit if the two were tokenised together (the same sequence for every
   option, so no option is favoured by a merge the others lack).
3. **Score** an option by the sum of its tokens' log-probabilities (log-softmax over the whole
   vocabulary at each preceding position); the distribution over options is a softmax of the sums.

The embedded backend computes step 3 with a packed prefix tree, the vLLM backend with
`prompt_logprobs` on token-id prompts, the `openai` backend with a server's `/tokenize` and
`prompt_logprobs` (vLLM's and `lsm serve`'s). Anything else is approximate and counted
(`LLMBackend.approximate_scores`).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from lsm.data_gen.teacher.backends.base import Conversation

TRIM_PROBE = "Answer: "
"""An assistant prefix ending in a space: a template that trims content loses the space."""


def split_prefix(conv: Conversation) -> tuple[Conversation, str]:
    """(the turns the template renders, the assistant prefix to continue; "" if none)."""
    if conv and conv[-1]["role"] == "assistant":
        return list(conv[:-1]), conv[-1]["content"]
    return list(conv), ""


def text_ids(tokenizer, text: str) -> list[int]:
    """Token ids of `text` alone (no special tokens)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def head_ids(tokenizer, head: Conversation, chat_template: str | None = None) -> list[int]:
    """Token ids of the turns before the answer, ending with the template's assistant header."""
    text = tokenizer.apply_chat_template(head, tokenize=False, add_generation_prompt=True, chat_template=chat_template)
    return text_ids(tokenizer, text)


def prompt_ids(tokenizer, conv: Conversation, chat_template: str | None = None) -> list[int]:
    """The prompt of `conv` as token ids (rule 1): head ids + the prefix's ids."""
    head, prefix = split_prefix(conv)
    return head_ids(tokenizer, head, chat_template) + text_ids(tokenizer, prefix)


def option_sequences(encode_prompt: Callable[[Conversation], list[int]], encode_text: Callable[[str], list[int]],
                     conversations: Sequence[Conversation],
                     option_labels: Sequence[Sequence[str]]) -> list[list[tuple[list[int], int]]]:
    """Per conversation, per option: (prompt ids + option ids, number of option tokens) (rule 2).
    `encode_prompt` / `encode_text` are a backend's `prompt_ids` / `text_ids` (local or a server's)."""
    if len(conversations) != len(option_labels):
        raise ValueError(f"{len(conversations)} conversations but {len(option_labels)} option lists")
    out = []
    for conv, options in zip(conversations, option_labels):
        prompt = encode_prompt(conv)
        seqs = []
        for o in options:
            ids = encode_text(o)
            if not ids:
                raise ValueError(f"option {o!r} of {list(options)} has no tokens")
            seqs.append((prompt + ids, len(ids)))
        out.append(seqs)
    return out


def summed_option_logprob(token_logprobs: Sequence[float | None], n_option: int) -> float:
    """Rule 3 from a sequence's per-token log-probabilities (`token_logprobs[j]`: log p(token j |
    tokens < j), None for the first): the sum over the last `n_option` tokens."""
    tail = list(token_logprobs)[-n_option:]
    if len(tail) != n_option or any(v is None for v in tail):
        raise ValueError(f"need the log-probabilities of the last {n_option} tokens, got {tail}")
    return float(sum(tail))  # type: ignore[arg-type]


def softmax_rows(logps: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per conversation, the distribution over its options from their summed log-probabilities."""
    out = []
    for lp in logps:
        lp = np.asarray(lp, dtype=np.float64)
        e = np.exp(lp - lp.max())
        out.append(e / e.sum())
    return out


def template_trims(render_continuation: Callable[[Conversation], Any], expect_tail: Any) -> bool:
    """Does a chat template trim an assistant prefix it continues? `render_continuation(conv)`
    renders [user, assistant TRIM_PROBE] as the server would (`continue_final_message`), as text
    or ids; `expect_tail` is what its end must be when nothing is trimmed (TRIM_PROBE itself, or
    its ids)."""
    rendered = render_continuation([{"role": "user", "content": "Say something."},
                                    {"role": "assistant", "content": TRIM_PROBE}])
    return list(rendered[-len(expect_tail):]) != list(expect_tail)


def local_template_trims(tokenizer, chat_template: str | None = None) -> bool:
    """`template_trims` for a local tokenizer's template (transformers' `continue_final_message`)."""
    return template_trims(lambda conv: tokenizer.apply_chat_template(
        conv, tokenize=False, continue_final_message=True, chat_template=chat_template), TRIM_PROBE)

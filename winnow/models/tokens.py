"""A prompt's token ids with the tokenizer's special prefix exactly once.

Gemma's and Llama 3's chat templates write ``<bos>`` / ``<|begin_of_text|>`` into the rendered
text, and their tokenizers put it before any text again when asked for special tokens: the model
would read a doubled BOS it never saw in training. A prompt here gets the prefix (the special
tokens the tokenizer puts before a text: BOS for Llama/Mistral/Gemma, none for Qwen or SmolLM)
unless its text already starts with it, which is what a model reads at training time, and the
same ids wherever winnow tokenizes a prompt (the engine, the probe's backbone, the features a
probe is trained on).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def special_prefix(tokenizer: Any) -> list[int]:
    """The special tokens ``tokenizer`` puts before a text (BOS, or none)."""
    return prefix_of(
        tokenizer.encode(PROBE, add_special_tokens=False),
        tokenizer.encode(PROBE, add_special_tokens=True),
    )


PROBE = "a"
"""The text whose two tokenizations (without and with special tokens) show the prefix."""


def prefix_of(bare: Sequence[int], full: Sequence[int]) -> list[int]:
    """What ``full`` (a text's ids with special tokens) has before ``bare`` (without)."""
    bare, full = list(bare), list(full)
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start]
    return []


def with_prefix(prefix: Sequence[int], ids: Sequence[int]) -> list[int]:
    """``ids`` led by ``prefix`` once: unchanged when they already start with it."""
    if list(ids[: len(prefix)]) == list(prefix):
        return list(ids)
    return [*prefix, *ids]


def prompt_ids(tokenizer: Any, text: str, prefix: Sequence[int] | None = None) -> list[int]:
    """``text``'s ids as a prompt (``prefix``: :func:`special_prefix` of ``tokenizer``, computed
    when not given)."""
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    return with_prefix(special_prefix(tokenizer) if prefix is None else prefix, ids)

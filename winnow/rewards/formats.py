"""Reward models read their own input format, not the policy's rendered text.

A reward model is trained on text rendered its authors' way: Skywork-Reward on conversations in
its own (Llama-3) chat template, Qwen2.5-Math-PRM on its own system prompt and chat template with
``<extra_0>`` after every step, Math-Shepherd on the bare question followed by steps tagged
``ки``. The backends that load such models (:mod:`.seq_cls`, :mod:`.step_tag_prm`) therefore
render the request's chat messages themselves (:func:`conversation`) with their own tokenizer's
chat template (or one configured for them), and tokenize the whole text in one call, as their
reference code does, so the ids are exactly the reference's. Positions inside the text (a step
tag) are found from the tokenizer's character offsets.

Only the in-process probes (``probe``) read the policy's own rendered text: they read the
policy's hidden states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from winnow.rewards.base import prompt_messages


def conversation(prompt: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """The chat messages of an item's prompt (:func:`~winnow.rewards.base.prompt_messages`);
    a configured ``system_prompt`` replaces the request's own system messages."""
    messages = prompt_messages(prompt)
    if system_prompt is None:
        return messages
    rest = [m for m in messages if m["role"] != "system"]
    return [{"role": "system", "content": system_prompt}, *rest]


def question(prompt: str) -> str:
    """The question a prompt asks: its last user message (the whole text of a plain prompt)."""
    users = [m["content"] for m in prompt_messages(prompt) if m["role"] == "user"]
    return users[-1] if users else str(prompt)


class ChatTemplate:
    """A reward model's chat template: its tokenizer's own, or one given in its config."""

    def __init__(self, tokenizer: Any, template: str | None, owner: str) -> None:
        if template is None and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"the tokenizer of {owner} has no chat template; give the template the model "
                "was trained with as chat_template in the reward's config"
            )
        self.tokenizer = tokenizer
        self.template = template
        try:
            self.render(
                [{"role": "user", "content": "1 + 1?"}, {"role": "assistant", "content": "2"}]
            )
        except Exception as exc:
            raise ValueError(f"the chat template of {owner} does not render: {exc}") from exc

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """The whole conversation as text, the last message closed (no generation prompt)."""
        return str(
            self.tokenizer.apply_chat_template(
                list(messages),
                tokenize=False,
                add_generation_prompt=False,
                chat_template=self.template,
            )
        )


def tokenize(
    tokenizer: Any, text: str, add_special_tokens: bool
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of ``text`` in one call, and each token's character span."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("reward models need a fast tokenizer (character offsets)")
    encoded = tokenizer(
        str(text), add_special_tokens=add_special_tokens, return_offsets_mapping=True
    )
    return list(encoded["input_ids"]), [(int(a), int(b)) for a, b in encoded["offset_mapping"]]


def covering(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> list[list[int]]:
    """For each character span (ascending, disjoint), the indices of the tokens overlapping it,
    in one pass. Special tokens added around the text have empty spans and overlap nothing."""
    found: list[list[int]] = [[] for _ in spans]
    first = 0
    for i, (a, b) in enumerate(offsets):
        if a >= b:
            continue
        while first < len(spans) and spans[first][1] <= a:
            first += 1
        k = first
        while k < len(spans) and spans[k][0] < b:
            found[k].append(i)
            k += 1
    return found

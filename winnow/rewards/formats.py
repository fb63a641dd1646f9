"""Reward models read their own input format, not the policy's rendered text.

A reward model is trained on text rendered its authors' way: Skywork-Reward on conversations in
its own (Llama-3) chat template, Qwen2.5-Math-PRM on its own system prompt and chat template with
``<extra_0>`` after every step, Math-Shepherd on the bare question followed by steps tagged
``ки``, RLHFlow's PRMs on a conversation with one user turn per step each answered ``+`` by the
assistant, Skywork-o1-PRM on BOS, the question and a newline followed by each step tokenized on
its own and closed by a newline token. The step-tag formats are here, one function each
(:func:`question_format`, :func:`chat_format`, :func:`multi_turn_format`,
:func:`lines_format`); each gives the text (or the token segments) and where every step's tag
is. The backends that load such models (:mod:`.seq_cls`, :mod:`.step_tag_prm`) therefore
render the request's chat messages themselves (:func:`conversation`) with their own tokenizer's
chat template (or one configured for them), and tokenize the whole text in one call, as their
reference code does, so the ids are exactly the reference's. Positions inside the text (a step
tag) are found from the tokenizer's character offsets.

Only the in-process probes (``probe``) read the policy's own rendered text: they read the
policy's hidden states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

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

    def render(self, messages: Sequence[dict[str, str]], generation_prompt: bool = False) -> str:
        """The whole conversation as text, the last message closed (unless
        ``generation_prompt``: then opened for the assistant's next message)."""
        return str(
            self.tokenizer.apply_chat_template(
                list(messages),
                tokenize=False,
                add_generation_prompt=generation_prompt,
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


class TaggedText(NamedTuple):
    """A step-tag PRM's input: the text, the character span of every step's tag in it, and
    where the steps begin (what comes before may be cut to fit)."""

    text: str
    tags: list[tuple[int, int]]
    steps_start: int


class FormatError(ValueError):
    """The chat template did not write a step or tag where the format needs it."""


def question_format(prompt: str, bodies: Sequence[str], tag: str) -> TaggedText:
    """Math-Shepherd: ``f"{question} {step_1} {tag}\n{step_2} {tag}"`` (read at each tag)."""
    head = question(prompt) + " "
    answer = "\n".join(f"{body} {tag}" for body in bodies)
    return TaggedText(head + answer, _spans(len(head), bodies, " " + tag, 1, tag), len(head))


def chat_format(
    template: ChatTemplate, messages: list[dict[str, str]], bodies: Sequence[str], tag: str
) -> TaggedText:
    """Qwen2.5-Math-PRM: the conversation, then the assistant's ``"{step_1}{tag}{step_2}{tag}"``
    in the chat template (read at each tag)."""
    answer = "".join(body + tag for body in bodies)
    rendered = template.render([*messages, {"role": "assistant", "content": answer}])
    at = rendered.rfind(answer)
    if at < 0:
        raise FormatError("the chat template changed the tagged answer")
    return TaggedText(rendered, _spans(at, bodies, tag, 0, tag), at)


def multi_turn_format(
    template: ChatTemplate,
    prompt: str,
    bodies: Sequence[str],
    tag: str,
    system_prompt: str | None = None,
) -> TaggedText:
    """RLHFlow's PRMs: one user turn per step (the first is ``f"{question} {step_1}"``), each
    answered by the assistant with ``tag`` (``+``), in the chat template. The model is read one
    token before each answer (the position whose next-token logits give ``+``/``-``); the span
    given is the answer's, and the reader steps one token back from it.

    Each answer is found where the template opens that assistant turn: the conversation up to
    the step, rendered with the generation prompt, must be a prefix of the whole text. The
    question shares its turn with the first step, so an input too long for the model is refused
    rather than cut."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    ask = question(prompt)
    opened = []
    for k, body in enumerate(bodies):
        messages.append({"role": "user", "content": f"{ask} {body}" if k == 0 else body})
        opened.append(template.render(messages, generation_prompt=True))
        messages.append({"role": "assistant", "content": tag})
    text = template.render(messages)
    starts = [len(head) for head in opened]
    for head in opened:
        if not text.startswith(head) or text[len(head) : len(head) + len(tag)] != tag:
            raise FormatError(f"the chat template does not write the answer {tag!r} where it opens")
    # the question shares its turn with the first step: nothing can be cut before the steps
    return TaggedText(text, [(at, at + len(tag)) for at in starts], 0)


def lines_format(tokenizer: Any, prompt: str) -> str:
    """Skywork-o1-PRM's prompt segment: BOS text (when the tokenizer has one), the question and
    a newline. Each step is then tokenized on its own and followed by the tag token
    (:class:`~winnow.rewards.step_tag_prm.StepTagPRM` does it: token ids, not text)."""
    return (getattr(tokenizer, "bos_token", None) or "") + question(prompt) + "\n"


def _spans(
    start: int, bodies: Sequence[str], tagged: str, joint: int, tag: str
) -> list[tuple[int, int]]:
    """The tag span after each body: every body is followed by ``tagged`` (its tag, with any
    space before it) and then ``joint`` characters before the next body."""
    spans, at = [], start
    for body in bodies:
        at += len(body) + len(tagged)
        spans.append((at - len(tag), at))
        at += joint
    return spans

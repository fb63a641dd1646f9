"""The reward seam: outcome rewards score whole responses, process rewards score each step.

Every backend (sequence-classification reward models, step-tag PRMs, probe heads, the generative
judge, the rule-based verifier, composites) implements :class:`Reward`. Strategies reach rewards
through the configured :class:`~winnow.rewards.registry.RewardSet` bound to their request
(:class:`~winnow.metering.rewards.MeteredRewards`), which counts reward calls and reward tokens
in the request's meter (:mod:`winnow.metering.engine`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from winnow.heads.domain import DomainVerdict

RewardKind = Literal["outcome", "process"]


class RewardError(RuntimeError):
    """A reward failed to score (backend error); the request fails with a 5xx."""


class RewardTimeout(RewardError):
    """A reward call did not answer within the server's --reward-timeout; it was abandoned."""


class RewardInputError(ValueError):
    """The items given to a reward are invalid for it (e.g. the verifier without a reference)."""


class ChatPrompt(str):
    """The rendered prompt text the policy saw, carrying the chat messages it was rendered from.

    It is the policy's text wherever a string is expected (the probe rewards read the policy's
    own hidden states on exactly this text), and reward models with an input format of their
    own (:mod:`.seq_cls`, :mod:`.step_tag_prm`) render :attr:`messages` themselves. Strategies
    hand it on unchanged, so it reaches every reward call. A plain ``str`` prompt (a completion
    request, ``/v1/rewards`` with ``prompt``) has no messages: see :func:`prompt_messages`.
    """

    __slots__ = ("_messages",)
    _messages: tuple[tuple[str, str], ...]

    def __new__(cls, text: str, messages: Sequence[Mapping[str, str]]) -> ChatPrompt:
        self = super().__new__(cls, text)
        self._messages = tuple((str(m["role"]), str(m["content"])) for m in messages)
        return self

    def __getnewargs__(self) -> tuple[str, list[dict[str, str]]]:  # type: ignore[override]
        return str(self), self.messages

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self._messages]


def prompt_messages(prompt: str) -> list[dict[str, str]]:
    """The chat messages of a reward item's prompt: a :class:`ChatPrompt`'s own, else the text
    as a single user message."""
    if isinstance(prompt, ChatPrompt):
        return prompt.messages
    return [{"role": "user", "content": str(prompt)}]


@dataclass(frozen=True, slots=True)
class Tapped:
    """What the engine already scored of a generated response (the reward tap): the token ids
    it saw and, per probe directory, the score of the state at the prompt's last token and at
    each generated token (:data:`winnow.engine.base.TapScores`; None where it has none). A probe
    reward reads its score from here when the tokens it would encode match these up to the
    position it reads; otherwise it encodes the text as usual."""

    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    scores: Mapping[str, Sequence[float | None]]


def join_tap(
    prefix: Mapping[str, Sequence[float | None]],
    continuation: Mapping[str, Sequence[float | None]] | None,
    length: int,
) -> dict[str, list[float | None]]:
    """The tap scores of a response of ``length`` tokens continued by an engine call that
    started from it: the call's first score is the state of the response's last token (the
    prompt's when it is empty), so the response's own scores up to that token come first.
    Empty when the call has none (the continuation was not tapped)."""
    if not continuation:
        return {}
    out: dict[str, list[float | None]] = {}
    for head, scores in continuation.items():
        before = list(prefix.get(head) or [])[:length]
        out[head] = [*before, *[None] * (length - len(before)), *scores]
    return out


@dataclass(frozen=True, slots=True)
class OutcomeItem:
    """One (prompt, response) pair. ``prompt`` is the rendered prompt text the policy saw (a
    :class:`ChatPrompt` when it was rendered from chat messages)."""

    prompt: str
    response: str
    reference: str | None = None  # a gold answer, for verifiers
    tapped: Tapped | None = None  # the engine's scores of this response, when it has them


@dataclass(frozen=True, slots=True)
class ProcessItem:
    """A prompt and the steps of a response so far.

    With ``partial`` the last step is unfinished and is scored as if it were complete (early
    rejection scores the first tokens of a step this way).
    """

    prompt: str
    steps: tuple[str, ...]
    partial: bool = False
    reference: str | None = None
    tapped: Tapped | None = None  # the engine's scores of these steps' tokens, when it has them


@dataclass(slots=True)
class Scored:
    """Scores for a batch of items, and what scoring them cost."""

    scores: list[float]
    tokens: int = 0  # tokens the reward model processed (0 for rule-based rewards)
    cached_tokens: int = 0  # tokens whose states the reward reused from its prefix cache
    tapped: int = 0  # scores read from the engine's states (Tapped) instead of a forward pass
    # per item, whether its prompt is in the reward's domain (a probe with a domain head,
    # winnow.heads.domain); None: the reward does not know where it applies
    domain: list[DomainVerdict] | None = None


@dataclass(slots=True)
class StepScored:
    scores: list[list[float]]  # one list per item, one score per step
    tokens: int = 0
    cached_tokens: int = 0
    tapped: int = 0  # items scored from the engine's states (Tapped)


@dataclass(frozen=True, slots=True)
class RewardInfo:
    name: str
    kind: RewardKind
    backend: str
    scale: str  # how to read a score, e.g. "probability in [0, 1]"
    description: str = ""
    extra: dict[str, object] = field(default_factory=dict)


class Reward(abc.ABC):
    """One named reward. Implementations must be safe to call from concurrent requests."""

    @property
    @abc.abstractmethod
    def info(self) -> RewardInfo: ...

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        """Outcome scores, one per item. Process rewards answer with their last step's score."""
        if self.info.kind != "process":
            raise NotImplementedError
        steps = await self.score_steps(
            [ProcessItem(i.prompt, split_steps(i.response), reference=i.reference) for i in items]
        )
        last = [s[-1] if s else float("nan") for s in steps.scores]
        return Scored(last, steps.tokens, steps.cached_tokens)

    async def score_steps(self, items: Sequence[ProcessItem]) -> StepScored:
        """Per-step scores; only process rewards implement it."""
        raise RewardInputError(f"reward {self.info.name!r} is an outcome reward: no step scores")

    def tap_heads(self, model_dir: str) -> tuple[str, ...]:
        """The probe directories the engine serving ``model_dir`` can score while it generates,
        so that this reward reads them from :class:`Tapped` (none: it always encodes)."""
        return ()

    async def domain_of(
        self, prompts: Sequence[str], tapped: Sequence[Tapped | None] | None = None
    ) -> tuple[list[DomainVerdict] | None, int]:
        """Per prompt, whether it is in the domain this reward was trained on, and the tokens
        encoded to know it; None: the reward does not know where it applies (a probe with a
        domain head does: :meth:`winnow.rewards.probe.ProbeReward.domain_of`)."""
        return None, 0

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load weights, warm up."""

    async def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


STEP_DELIMITER = "\n\n"


def split_steps(text: str, delimiter: str = STEP_DELIMITER) -> tuple[str, ...]:
    """Split a response into steps as strategies generate them: each step keeps its delimiter,
    and a blank piece (a run of extra newlines) stays with the step before it, so
    ``"".join(split_steps(text)) == text``."""
    steps: list[str] = []
    parts = text.split(delimiter)
    for i, part in enumerate(parts):
        piece = part + (delimiter if i < len(parts) - 1 else "")
        if steps and not part.strip():
            steps[-1] += piece
        elif piece:
            steps.append(piece)
    return tuple(steps)

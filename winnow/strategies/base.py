"""What a strategy receives and returns; nothing here knows about HTTP or vLLM.

A strategy is ``async def run(request, engine, rewards) -> StrategyResult``. The engine and the
rewards it gets are bound to the request's meter (:mod:`winnow.metering.engine`), so every token
generated (kept or discarded), every engine call and every reward call is counted without the
strategy's help. A strategy that can stream sends :class:`ChoiceDelta` s to ``request.sink``; one
that decides at the end just returns, and the server sends the chosen answers when it does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from winnow.engine.base import FinishReason, SamplingSpec, TokenLogprob
from winnow.metering.engine import MeteredEngine
from winnow.metering.rewards import MeteredRewards as Rewards
from winnow.protocol.trace import Trace


class StrategyParams(BaseModel):
    """Base of every strategy's parameter model: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid")

    def candidates(self) -> int:
        """Sequences sampled per prompt at once (checked against the server's --max-n)."""
        return 1

    def token_budget(self, request: GenerationRequest) -> int:
        """The most tokens this strategy may generate for ``request`` (kept and discarded),
        checked against the server's per-request cap before any work starts."""
        return self.candidates() * request.spec.max_tokens

    def check(self, request: GenerationRequest) -> None:
        """Raise ``StrategyError`` if these parameters cannot serve ``request`` (a 400)."""


@dataclass(slots=True)
class ChoiceDelta:
    """New text of one returned choice, for streaming."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprob] | None = None


class StreamSink(Protocol):
    async def send(self, deltas: Sequence[ChoiceDelta]) -> None: ...


class GenerationRequest:
    """A validated request as a strategy sees it: its own sampling settings as one engine call
    (``spec``: the prompt, as token ids from the server, and how to sample), the prompt as text
    for rewards, and the strategy's parameters. A strategy derives each engine call it makes
    from ``spec`` (``request.spec.replace(n=8)``), so no sampling setting is written out twice.
    """

    __slots__ = ("params", "prompt_text", "sink", "spec", "user")

    def __init__(
        self,
        spec: SamplingSpec | None = None,
        *,
        prompt_text: str = "",
        params: StrategyParams | None = None,
        sink: StreamSink | None = None,
        user: str | None = None,
        **sampling: Any,
    ) -> None:
        """Give ``spec``, or its settings as keywords (``prompt=..., n=4, max_tokens=64``)."""
        if spec is not None and sampling:
            raise TypeError("give spec or its settings, not both")
        self.spec = spec if spec is not None else SamplingSpec(**sampling)
        self.prompt_text = prompt_text  # the prompt as text (rendered chat), for rewards
        self.params = params if params is not None else StrategyParams()
        self.sink = sink
        self.user = user


@dataclass(slots=True)
class Choice:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None
    logprobs: list[TokenLogprob] | None = None
    score: float | None = None


@dataclass(slots=True)
class StrategyResult:
    choices: list[Choice]
    candidates: list[dict[str, Any]] | None = None  # every candidate, when the client asks
    details: dict[str, Any] = field(default_factory=dict)  # strategy-specific figures
    trace: Trace | None = None  # what the search did, when the client asks (``trace: true``)
    streamed: bool = False  # the choices already went out through the sink


StrategyFn = Callable[[GenerationRequest, MeteredEngine, Rewards], Awaitable[StrategyResult]]

"""What a strategy receives and returns; nothing here knows about HTTP or vLLM.

A strategy is ``async def run(request, engine, rewards) -> StrategyResult``. The engine and the
rewards it gets are bound to the request's meter (:mod:`winnow.metering`), so every token
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
from winnow.metering import MeteredEngine, TokenBudgetExceeded, UsageMeter
from winnow.rewards.registry import MeteredRewards as Rewards
from winnow.strategies.trace import Trace


class StrategyParams(BaseModel):
    """Base of every strategy's parameter model: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid")

    def candidates(self) -> int:
        """Sequences sampled per prompt at once (checked against the server's --max-n)."""
        return 1

    def token_budget(self, request: GenerationRequest) -> int:
        """The most tokens this strategy may generate for ``request`` (kept and discarded),
        checked against the server's per-request cap before any work starts."""
        return self.candidates() * request.max_tokens

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


@dataclass(slots=True)
class GenerationRequest:
    """A validated request as a strategy sees it: a rendered prompt and sampling settings."""

    prompt: str | tuple[int, ...]
    prompt_text: str = ""  # the prompt as text (rendered chat), for rewards
    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    logprobs: int | None = None
    ignore_eos: bool = False
    params: StrategyParams = field(default_factory=StrategyParams)
    sink: StreamSink | None = None
    user: str | None = None

    def sampling(self, **overrides: Any) -> SamplingSpec:
        """The request's own sampling settings as an engine call, with overrides."""
        base: dict[str, Any] = {
            "prompt": self.prompt,
            "n": self.n,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
            "stop": self.stop,
            "stop_token_ids": self.stop_token_ids,
            "logprobs": self.logprobs,
            "ignore_eos": self.ignore_eos,
        }
        base.update(overrides)
        return SamplingSpec(**base)


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


# The request's meters live in winnow.metering; the server still imports them from here.
__all__ = ["MeteredEngine", "Rewards", "TokenBudgetExceeded", "UsageMeter"]

StrategyFn = Callable[[GenerationRequest, MeteredEngine, Rewards], Awaitable[StrategyResult]]

"""What a strategy receives and returns; nothing here knows about HTTP or vLLM.

A strategy is ``async def run(request, engine, rewards) -> StrategyResult``. The engine it gets is
a :class:`MeteredEngine` bound to the request, so every token generated (kept or discarded) and
every engine call is counted without the strategy's help: the accounting is honest by
construction. A strategy that can stream sends :class:`ChoiceDelta` s to ``request.sink``; one
that decides at the end just returns, and the server sends the chosen answers when it does.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from winnow.engine.base import (
    ChatMessage,
    Engine,
    FinishReason,
    Generation,
    ModelInfo,
    SamplingSpec,
    StreamEvent,
    TokenLogprob,
)
from winnow.protocol.trace import Trace
from winnow.rewards.registry import MeteredRewards as Rewards


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
class UsageMeter:
    """Everything a request cost, kept and discarded alike."""

    prompt_tokens: int = 0  # the prompt, counted once however many calls reuse it
    generated_tokens: int = 0  # every token the engine generated for this request
    engine_calls: int = 0
    prefilled_tokens: int = 0  # prompt tokens the engine processed, summed over calls
    cached_tokens: int = 0  # of those, tokens served from the prefix cache
    reward_calls: int = 0
    reward_tokens: int = 0  # tokens reward models computed for this request
    reward_cached_tokens: int = 0  # tokens they reused from their prefix caches instead
    token_limit: int | None = None  # the request's token budget, enforced by MeteredEngine

    def record(self, generation_prompt_tokens: int, generated: int, cached: int) -> None:
        self.engine_calls += 1
        self.generated_tokens += generated
        self.prefilled_tokens += generation_prompt_tokens
        self.cached_tokens += cached


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


class TokenBudgetExceeded(RuntimeError):
    """A strategy generated more tokens than the budget it declared (:meth:`token_budget`)."""


class MeteredEngine:
    """An engine bound to one request's :class:`UsageMeter`; strategies only ever see this."""

    def __init__(self, engine: Engine, usage: UsageMeter) -> None:
        self._engine = engine
        self.usage = usage

    @property
    def info(self) -> ModelInfo:
        return self._engine.info

    async def generate(self, spec: SamplingSpec) -> Generation:
        generation = await self._engine.generate(spec)
        self._count_prompt(generation.prompt_token_ids)
        self.usage.record(
            len(generation.prompt_token_ids),
            generation.generated_tokens,
            generation.cached_prompt_tokens,
        )
        self._check_budget()
        return generation

    def _check_budget(self) -> None:
        limit = self.usage.token_limit
        if limit is not None and self.usage.generated_tokens > limit:
            raise TokenBudgetExceeded(
                f"the strategy generated {self.usage.generated_tokens} tokens, past its token "
                f"budget of {limit}; its engine work was stopped"
            )

    async def stream(self, spec: SamplingSpec) -> AsyncIterator[StreamEvent]:
        first = True
        try:
            async with contextlib.aclosing(self._engine.stream(spec)) as events:
                async for event in events:
                    if first:
                        self._count_prompt(event.prompt_token_ids)
                        self.usage.record(
                            len(event.prompt_token_ids), 0, event.cached_prompt_tokens
                        )
                        first = False
                    self.usage.generated_tokens += sum(len(d.token_ids) for d in event.deltas)
                    self._check_budget()  # leaving the loop closes the stream: the engine aborts
                    yield event
        finally:
            if first:  # closed before any output: the call was still made
                self.usage.engine_calls += 1

    def _count_prompt(self, prompt_token_ids: Sequence[int]) -> None:
        if not self.usage.prompt_tokens:
            self.usage.prompt_tokens = len(prompt_token_ids)

    async def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return await self._engine.tokenize(text, add_special_tokens)

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        return await self._engine.detokenize(token_ids)

    async def apply_chat_template(
        self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True
    ) -> str:
        return await self._engine.apply_chat_template(messages, add_generation_prompt)


__all__ = ["Rewards"]  # re-exported: strategies take the request's metered reward view

StrategyFn = Callable[[GenerationRequest, MeteredEngine, Rewards], Awaitable[StrategyResult]]

"""What one request cost, counted where the work is done, so the accounting is honest by
construction.

A request gets one :class:`UsageMeter`. The engine a strategy sees is a :class:`MeteredEngine`
bound to it (every engine call and every token generated, kept or discarded, and the request's
token budget); the reward view a strategy sees
(:class:`winnow.rewards.registry.MeteredRewards`) counts every reward call into the same meter.
The meter sits under both layers: it knows engine generations, and of rewards only their token
counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from winnow.engine.base import (
    ChatMessage,
    Engine,
    Generation,
    ModelInfo,
    SamplingSpec,
    StreamEvent,
)


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
    reward_tapped: int = 0  # scores read from the engine's own states (no reward forward pass)
    token_limit: int | None = None  # the request's token budget, enforced by MeteredEngine

    def record(self, generation_prompt_tokens: int, generated: int, cached: int) -> None:
        """One engine call."""
        self.engine_calls += 1
        self.generated_tokens += generated
        self.prefilled_tokens += generation_prompt_tokens
        self.cached_tokens += cached

    def record_reward(self, tokens: int, cached_tokens: int, tapped: int = 0) -> None:
        """One reward call: the tokens its model computed, those it reused, and how many of its
        scores the engine had already computed (the reward tap)."""
        self.reward_calls += 1
        self.reward_tokens += tokens
        self.reward_cached_tokens += cached_tokens
        self.reward_tapped += tapped


class TokenBudgetExceeded(RuntimeError):
    """A strategy generated more tokens than the budget it declared (``token_budget``)."""


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

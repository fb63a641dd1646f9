"""The engine a strategy sees: the shared engine bound to one request's
:class:`~winnow.metering.usage.UsageMeter` (every call, every token generated, kept or
discarded, and the request's token budget).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from winnow.engine.base import (
    ChatMessage,
    Engine,
    Generation,
    ModelInfo,
    SamplingSpec,
    StreamEvent,
)
from winnow.metering.usage import TokenBudgetExceeded, UsageMeter


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
                    self.usage.generated_tokens += sum(
                        len(d.token_ids) + d.unseen_tokens for d in event.deltas
                    )
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

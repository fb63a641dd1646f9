"""What one request cost, counted where the work is done, so the accounting is honest by
construction.

A request gets one :class:`UsageMeter`. The engine a strategy sees is a
:class:`~winnow.metering.engine.MeteredEngine` bound to it (every engine call and every token
generated, kept or discarded, and the request's token budget); the reward view a strategy sees
(:class:`~winnow.metering.rewards.MeteredRewards`) counts every reward call into the same meter.
"""

from __future__ import annotations

from dataclasses import dataclass


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

"""A request's view of the reward set: every reward call counts in the request's
:class:`~winnow.metering.usage.UsageMeter`, is bounded by the server's reward timeout, and a
backend failure becomes a :class:`~winnow.rewards.base.RewardError` naming the reward."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from winnow.metering.usage import UsageMeter
from winnow.rewards.base import (
    OutcomeItem,
    ProcessItem,
    Reward,
    RewardError,
    RewardInfo,
    RewardInputError,
    RewardTimeout,
    Scored,
    StepScored,
    Tapped,
)
from winnow.rewards.registry import RewardRef, RewardSet, UnknownReward

if TYPE_CHECKING:
    from winnow.heads.domain import DomainVerdict

T = TypeVar("T")
S = TypeVar("S", Scored, StepScored)


class MeteredRewards:
    """A request's view of the reward set: every reward call counts in the request's usage."""

    def __init__(self, rewards: RewardSet, usage: UsageMeter) -> None:
        self._rewards = rewards
        self.usage = usage

    def names(self) -> list[str]:
        return self._rewards.names()

    def resolve(self, reward: RewardRef) -> Reward:
        """A configured reward by name, or an ad-hoc weighted composite of configured ones."""
        if isinstance(reward, str):
            return self._rewards.get(reward)
        from winnow.rewards.composite import CompositeReward

        for name in reward:
            self._rewards.get(name)  # raises UnknownReward with the configured names
        return CompositeReward("composite", self._rewards, reward)

    def info(self, reward: RewardRef) -> RewardInfo:
        return self.resolve(reward).info

    def tap_heads(self, reward: RewardRef, tap_model: str | None) -> tuple[str, ...]:
        """What to ask the engine to score while it generates for ``reward`` (``tap_model``:
        the engine's :attr:`~winnow.engine.base.ModelInfo.tap_model`; None, it cannot)."""
        if tap_model is None or not self._rewards.tap:
            return ()
        return self.resolve(reward).tap_heads(tap_model)

    async def domain_of(
        self,
        reward: RewardRef,
        prompts: Sequence[str],
        tapped: Sequence[Tapped | None] | None = None,
    ) -> list[DomainVerdict] | None:
        """Per prompt, whether it is in ``reward``'s domain (None: the reward does not know),
        without scoring any response; the tokens it encodes count as reward tokens. (Scores
        carry the same verdicts: :attr:`Scored.domain`.)"""
        resolved = self.resolve(reward)
        with _backend_errors(resolved):
            verdicts, tokens = await self._bounded(resolved, resolved.domain_of(prompts, tapped))
        if tokens:
            self.usage.record_reward(tokens, 0, 0)
        return verdicts

    async def score(self, reward: RewardRef, items: Sequence[OutcomeItem]) -> Scored:
        resolved = self.resolve(reward)
        with _backend_errors(resolved):
            scored = await self._bounded(resolved, resolved.score(items))
        return self._counted(scored)

    async def score_steps(self, reward: RewardRef, items: Sequence[ProcessItem]) -> StepScored:
        resolved = self.resolve(reward)
        with _backend_errors(resolved):
            scored = await self._bounded(resolved, resolved.score_steps(items))
        return self._counted(scored)

    async def _bounded(self, reward: Reward, call: Awaitable[T]) -> T:
        """Wait for a reward call at most ``call_timeout``; past it the call is cancelled
        (a batched call leaves its batch; a judge call aborts its engine requests)."""
        timeout = self._rewards.call_timeout
        if timeout is None:
            return await call
        try:
            return await asyncio.wait_for(call, timeout)
        except TimeoutError:
            raise RewardTimeout(
                f"reward {reward.info.name!r} did not answer within {timeout:g} s "
                "(--reward-timeout); the call was abandoned"
            ) from None

    def _counted(self, scored: S) -> S:
        self.usage.record_reward(scored.tokens, scored.cached_tokens, getattr(scored, "tapped", 0))
        return scored


@contextlib.contextmanager
def _backend_errors(reward: Reward) -> Iterator[None]:
    """A backend failure becomes a :class:`RewardError` naming the reward (a 5xx for the client);
    invalid input stays a :class:`RewardInputError` (a 400)."""
    try:
        yield
    except (RewardInputError, RewardError, UnknownReward):
        raise
    except Exception as exc:
        raise RewardError(
            f"reward {reward.info.name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc

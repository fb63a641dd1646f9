"""A weighted sum of named rewards. Configured with default weights, or made per request.

A strategy's ``reward`` may be a name or a mapping of names to weights, e.g.
``{"default": 1.0, "verifier": 0.5}``: the latter is an ad-hoc composite for that request only
(no shared mutable state). The parts are scored concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from winnow.rewards.base import (
    OutcomeItem,
    ProcessItem,
    Reward,
    RewardInfo,
    RewardInputError,
    Scored,
    StepScored,
)


class CompositeReward(Reward):
    def __init__(self, name: str, rewards: Any, weights: Mapping[str, float]) -> None:
        if not weights:
            raise RewardInputError("a composite reward needs at least one weighted reward")
        self._rewards = rewards
        self.weights = dict(weights)
        parts = [rewards.get(n).info for n in self.weights]
        kinds = {p.kind for p in parts}
        self._info = RewardInfo(
            name=name,
            kind="process" if kinds == {"process"} else "outcome",
            backend="composite",
            scale="weighted sum: " + " + ".join(f"{w:g} * {n}" for n, w in self.weights.items()),
            extra={"weights": self.weights},
        )

    @property
    def info(self) -> RewardInfo:
        return self._info

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        names = list(self.weights)
        parts = await asyncio.gather(*(self._rewards.get(n).score(items) for n in names))
        totals = [0.0] * len(items)
        for name, part in zip(names, parts, strict=True):
            for i, s in enumerate(part.scores):
                totals[i] += self.weights[name] * s
        return Scored(
            totals,
            sum(p.tokens for p in parts),
            sum(p.cached_tokens for p in parts),
            sum(p.tapped for p in parts),
        )

    def tap_heads(self, model_dir: str) -> tuple[str, ...]:
        heads = (h for n in self.weights for h in self._rewards.get(n).tap_heads(model_dir))
        return tuple(dict.fromkeys(heads))

    async def score_steps(self, items: Sequence[ProcessItem]) -> StepScored:
        if self.info.kind != "process":
            return await super().score_steps(items)
        names = list(self.weights)
        parts = await asyncio.gather(*(self._rewards.get(n).score_steps(items) for n in names))
        totals = [[0.0] * len(item.steps) for item in items]
        for name, part in zip(names, parts, strict=True):
            for i, steps in enumerate(part.scores):
                for j, s in enumerate(steps):
                    totals[i][j] += self.weights[name] * s
        return StepScored(
            totals,
            sum(p.tokens for p in parts),
            sum(p.cached_tokens for p in parts),
            sum(p.tapped for p in parts),
        )

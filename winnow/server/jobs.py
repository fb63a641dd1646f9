"""One prompt of a request as it runs: its strategy, what the strategy sees, what it cost and
what it returned. A completions request with several prompts is several jobs, run at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from winnow.engine.base import Engine
from winnow.metering.engine import MeteredEngine
from winnow.metering.rewards import MeteredRewards
from winnow.metering.usage import UsageMeter
from winnow.rewards.registry import RewardSet
from winnow.strategies import registry
from winnow.strategies.base import GenerationRequest, StrategyResult


@dataclass
class Job:
    """One prompt of a request, ready to run."""

    strategy: str
    request: GenerationRequest
    index_offset: int  # where this prompt's choices start among the response's
    usage: UsageMeter = field(default_factory=UsageMeter)
    result: StrategyResult | None = None

    async def run(self, engine: Engine, rewards: RewardSet) -> StrategyResult:
        """Run the strategy on an engine and rewards that count into this job's usage."""
        run = registry.get(self.strategy).run
        metered = MeteredEngine(engine, self.usage)
        self.result = await run(self.request, metered, MeteredRewards(rewards, self.usage))
        return self.result


async def run_jobs(jobs: Sequence[Job], engine: Engine, rewards: RewardSet) -> None:
    await asyncio.gather(*(job.run(engine, rewards) for job in jobs))

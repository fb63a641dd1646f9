"""A scripted reward for tests and fake-engine benchmarks: deterministic, obviously fake.

A score is a stable function of the text (no model). Faults are scripted by a marker in the
prompt, so one server can serve faulty and healthy requests side by side:

* ``@reward-raise``: the backend raises (a reward backend that fails);
* ``@reward-hang``: the call never returns. With ``batched=True`` the hang happens inside the
  cross-request batcher's worker thread (like a wedged forward pass), otherwise in the event loop.

:meth:`FakeReward.release` ends every hung call (tests call it to leave no thread behind).
"""

from __future__ import annotations

import asyncio
import threading
import zlib
from collections.abc import Sequence

from winnow.rewards.base import (
    OutcomeItem,
    ProcessItem,
    Reward,
    RewardInfo,
    RewardKind,
    Scored,
    StepScored,
)
from winnow.rewards.batcher import MicroBatcher

RAISE = "@reward-raise"
HANG = "@reward-hang"


def text_score(text: str) -> float:
    """A stable pseudo-score in [0, 1) for a text."""
    return (zlib.crc32(text.encode()) % 1000) / 1000


class FakeReward(Reward):
    def __init__(
        self,
        name: str = "default",
        kind: RewardKind = "outcome",
        *,
        delay: float = 0.0,
        batched: bool = False,
    ) -> None:
        self._info = RewardInfo(name, kind, "fake", "pseudo-score in [0, 1)")
        self.delay = delay
        self.calls = 0
        self._released = threading.Event()
        self.batcher: MicroBatcher[tuple[str, str], float] | None = (
            MicroBatcher(name, self._run_batch) if batched else None
        )

    @property
    def info(self) -> RewardInfo:
        return self._info

    def release(self) -> None:
        self._released.set()

    def _run_batch(self, jobs: list[tuple[str, str]]) -> tuple[list[float], int]:
        """Runs in the batcher's worker thread."""
        if any(HANG in prompt for prompt, _ in jobs):
            self._released.wait()
        return [text_score(p + t) for p, t in jobs], sum(len(p) + len(t) for p, t in jobs)

    async def _scores(self, pairs: Sequence[tuple[str, str]]) -> tuple[list[float], int]:
        self.calls += 1
        prompts = [p for p, _ in pairs]
        if any(RAISE in p for p in prompts):
            raise RuntimeError("fake reward backend failed")
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.batcher is not None:
            scores = await self.batcher.submit(list(pairs))
            return scores, sum(len(p) + len(t) for p, t in pairs)
        if any(HANG in p for p in prompts):
            await asyncio.Event().wait()
        return [text_score(p + t) for p, t in pairs], sum(len(p) + len(t) for p, t in pairs)

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        if self.info.kind == "process":
            return await super().score(items)
        scores, tokens = await self._scores([(i.prompt, i.response) for i in items])
        return Scored(scores, tokens)

    async def score_steps(self, items: Sequence[ProcessItem]) -> StepScored:
        if self.info.kind != "process":
            return await super().score_steps(items)
        pairs = [(i.prompt, "".join(i.steps[: k + 1])) for i in items for k in range(len(i.steps))]
        flat, tokens = await self._scores(pairs)
        out: list[list[float]] = []
        at = 0
        for item in items:
            out.append(flat[at : at + len(item.steps)])
            at += len(item.steps)
        return StepScored(out, tokens)

    async def shutdown(self) -> None:
        self.release()
        if self.batcher is not None:
            await self.batcher.close()


def fake_rewards(*, delay: float = 0.0, batched: bool = False) -> dict[str, Reward]:
    """The default reward names a server has, backed by fakes (plus the real verifier)."""
    from winnow.rewards.verifier import VerifierReward

    return {
        "default": FakeReward("default", "outcome", delay=delay, batched=batched),
        "default_prm": FakeReward("default_prm", "process", delay=delay, batched=batched),
        "verifier": VerifierReward("verifier"),
    }

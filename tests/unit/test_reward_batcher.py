"""The cross-request batcher: concurrent score calls share forward passes, failures stay local."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from winnow.rewards.batcher import MicroBatcher


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.observed: list[tuple[str, int, int]] = []

    def run(self, jobs: list[int]) -> tuple[list[int], int]:
        self.batches.append(list(jobs))
        time.sleep(0.02)  # a forward pass takes time: callers pile up meanwhile
        return [j * 10 for j in jobs], len(jobs)

    def observe_batch(
        self, reward: str, jobs: int, callers: int, wait: float, tokens: int, cached: int = 0
    ) -> None:
        self.observed.append((reward, jobs, callers))


def test_concurrent_calls_are_merged_and_results_routed_back():
    rec = Recorder()

    async def main() -> list[list[int]]:
        batcher = MicroBatcher("r", rec.run, max_jobs=64, max_wait=0.01, observer=rec)
        results = await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(16)))
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert results == [[i * 10, (i + 100) * 10] for i in range(16)]
    assert len(rec.batches) < 16  # merged: fewer passes than calls
    assert sum(len(b) for b in rec.batches) == 32
    assert max(callers for _, _, callers in rec.observed) > 1


def test_batches_respect_max_jobs():
    rec = Recorder()

    async def main() -> None:
        batcher = MicroBatcher("r", rec.run, max_jobs=4, max_wait=0.01)
        await asyncio.gather(*(batcher.submit([i]) for i in range(10)))
        await batcher.close()

    asyncio.run(main())
    assert all(len(b) <= 4 for b in rec.batches)
    assert sorted(j for b in rec.batches for j in b) == list(range(10))


def test_a_failing_pass_fails_only_its_callers():
    calls = {"n": 0}

    def run(jobs: list[int]) -> tuple[list[int], int]:
        calls["n"] += 1
        if -1 in jobs:
            raise RuntimeError("boom")
        return jobs, 0

    async def main() -> tuple[object, list[int]]:
        batcher = MicroBatcher("r", run, max_jobs=1, max_wait=0.0)
        bad, good = await asyncio.gather(
            batcher.submit([-1]), batcher.submit([5]), return_exceptions=True
        )
        await batcher.close()
        return bad, good

    bad, good = asyncio.run(main())
    assert isinstance(bad, RuntimeError)
    assert good == [5]


def test_cancelled_caller_does_not_block_others():
    gate = threading.Event()

    def run(jobs: list[int]) -> tuple[list[int], int]:
        gate.wait(2)
        return jobs, 0

    async def main() -> list[int]:
        batcher = MicroBatcher("r", run, max_jobs=1, max_wait=0.0)
        first = asyncio.ensure_future(batcher.submit([1]))
        second = asyncio.ensure_future(batcher.submit([2]))
        third = asyncio.ensure_future(batcher.submit([3]))
        await asyncio.sleep(0.05)
        second.cancel()
        gate.set()
        result = await first + await third
        with pytest.raises(asyncio.CancelledError):
            await second
        await batcher.close()
        return result

    assert asyncio.run(main()) == [1, 3]

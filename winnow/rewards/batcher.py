"""The cross-request batcher: score calls from concurrent requests share one forward pass.

Callers submit lists of jobs; a single worker waits at most ``max_wait`` after the first job
arrives (or until ``max_jobs`` are queued), runs the backend once on everything gathered, in a
worker thread so the event loop keeps serving, and hands each caller its own results. A failing
pass fails only the calls in it; a cancelled caller's jobs are dropped if not yet started.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from winnow.rewards.base import RewardTimeout

J = TypeVar("J")
R = TypeVar("R")


class BatchObserver(Protocol):
    def observe_batch(
        self, reward: str, jobs: int, callers: int, wait: float, tokens: int, cached: int = 0
    ) -> None:
        """One forward pass ran: its size, how many calls it merged, the oldest job's wait, the
        tokens it computed and those it reused from a prefix cache."""


@dataclass(slots=True)
class _Pending(Generic[J, R]):
    jobs: Sequence[J]
    future: asyncio.Future[list[R]]
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[J, R]):
    """Gathers jobs across callers into one call of ``run(jobs) -> (results, tokens)``."""

    def __init__(
        self,
        name: str,
        run: Callable[[list[J]], tuple[list[R], int]],
        *,
        max_jobs: int = 64,
        max_wait: float = 0.005,
        observer: BatchObserver | None = None,
        pass_timeout: float | None = None,
    ) -> None:
        self.name = name
        self._run = run
        self.max_jobs = max_jobs
        self.max_wait = max_wait
        self.observer = observer
        # A pass that takes longer is abandoned (its thread cannot be killed; it finishes or
        # hangs on its own) and its calls fail, so a wedged backend does not stall later calls.
        self.pass_timeout = pass_timeout
        self._queue: list[_Pending[J, R]] = []
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self.passes = 0  # forward passes run (for tests and benchmarks)

    async def submit(self, jobs: Sequence[J]) -> list[R]:
        if not jobs:
            return []
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._work())
        pending: _Pending[J, R] = _Pending(jobs, loop.create_future())
        self._queue.append(pending)
        assert self._wakeup is not None
        self._wakeup.set()
        return await pending.future

    async def _work(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._queue:
                continue
            deadline = self._queue[0].queued_at + self.max_wait
            while sum(len(p.jobs) for p in self._queue) < self.max_jobs:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except TimeoutError:
                    break
            await self._run_once(self._take())
            if self._queue:
                self._wakeup.set()

    def _take(self) -> list[_Pending[J, R]]:
        """Take whole calls, oldest first, up to ``max_jobs`` (a larger call goes alone)."""
        taken: list[_Pending[J, R]] = []
        size = 0
        while self._queue:
            p = self._queue[0]
            if p.future.cancelled():
                self._queue.pop(0)
                continue
            if taken and size + len(p.jobs) > self.max_jobs:
                break
            taken.append(self._queue.pop(0))
            size += len(p.jobs)
        return taken

    async def _run_once(self, calls: list[_Pending[J, R]]) -> None:
        if not calls:
            return
        jobs = [job for call in calls for job in call.jobs]
        wait = time.perf_counter() - calls[0].queued_at
        try:
            results, tokens = await asyncio.wait_for(
                asyncio.to_thread(self._run, jobs), self.pass_timeout
            )
        except TimeoutError:
            exc = RewardTimeout(
                f"reward {self.name!r}: a forward pass took over {self.pass_timeout:g} s and "
                "was abandoned"
            )
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        except Exception as exc:
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        self.passes += 1
        if self.observer is not None:
            # results may say how many of their tokens came from a prefix cache (ProbeResult)
            cached = sum(getattr(r, "cached", 0) for r in results)
            self.observer.observe_batch(self.name, len(jobs), len(calls), wait, tokens, cached)
        start = 0
        for call in calls:
            end = start + len(call.jobs)
            if not call.future.done():
                call.future.set_result(results[start:end])
            start = end

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None

"""A bound on in-flight work: at most ``max_running`` requests run, at most ``max_queued`` wait;
past that a request gets 429 with Retry-After at once instead of growing memory without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from winnow.server.errors import APIError


class Slot:
    """A running place, released exactly once (however the request ends)."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release

    def release(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


class Admission:
    def __init__(self, max_running: int, max_queued: int) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self.running = 0
        self.queued = 0
        self._free = asyncio.Condition()

    async def acquire(self) -> Slot:
        if self.running >= self.max_running and self.queued >= self.max_queued:
            raise APIError(
                429,
                f"server is at capacity ({self.running} running, {self.queued} queued); retry",
                code="overloaded",
                headers={"Retry-After": "1"},
            )
        self.queued += 1
        try:
            async with self._free:
                await self._free.wait_for(lambda: self.running < self.max_running)
                self.running += 1
        finally:
            self.queued -= 1
        return Slot(self._release)

    def _release(self) -> None:
        self.running -= 1
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._free:
            self._free.notify()

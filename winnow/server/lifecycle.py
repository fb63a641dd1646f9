"""Graceful shutdown: stop taking requests, let in-flight ones finish until a deadline, then abort
what remains (each aborted request gets a 503 and its engine work is cancelled).

``begin()`` may be called from any thread (a signal handler, a test); it starts the drain on the
server's loop. While draining, new requests get 503; requests already admitted or queued go on
until ``--shutdown-timeout`` has passed, then ``aborted`` is set and every request still running
ends with a 503 (streams get it in-band), which cancels its strategy and so its engine calls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from winnow.server.errors import APIError

log = logging.getLogger("winnow.server")


class Drain:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.draining = False
        self.deadline: float | None = None
        self._busy: Callable[[], int] = lambda: 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aborted: asyncio.Event | None = None
        self._lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None

    def bind(self, loop: asyncio.AbstractEventLoop, busy: Callable[[], int]) -> None:
        """Attach to the server's loop (the app's lifespan does this at start-up); ``busy``
        counts the requests admitted or queued."""
        self._loop = loop
        self._busy = busy
        self._aborted = asyncio.Event()
        self.draining = False  # a new start-up of the same app (tests) opens it again
        self.deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def in_flight(self) -> int:
        return self._busy()

    # ---- requests ---------------------------------------------------------------------------

    def check_open(self) -> None:
        if self.draining:
            raise APIError(
                503,
                "server is shutting down; retry on another instance",
                code="shutting_down",
                headers={"Retry-After": "1", "Connection": "close"},
            )

    async def wait_aborted(self) -> None:
        """Return when the drain deadline has passed (never, if no drain starts)."""
        if self._aborted is None:
            await asyncio.Event().wait()
        else:
            await self._aborted.wait()

    @property
    def aborted(self) -> bool:
        return self._aborted is not None and self._aborted.is_set()

    def abort_error(self) -> APIError:
        return APIError(
            503,
            f"server shut down before this request finished (drain deadline {self.timeout:g} s, "
            "--shutdown-timeout); its work was aborted",
            code="shutting_down",
        )

    # ---- shutting down ----------------------------------------------------------------------

    def begin(self) -> None:
        """Start draining (idempotent, any thread)."""
        with self._lock:
            if self.draining:
                return
            self.draining = True
            self.deadline = time.monotonic() + self.timeout
        log.info("draining: %d request(s) in flight, deadline %.0f s", self.in_flight, self.timeout)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._schedule_abort)

    def _schedule_abort(self) -> None:
        assert self._loop is not None and self.deadline is not None
        delay = max(self.deadline - time.monotonic(), 0.0)
        self._timer = self._loop.call_later(delay, self._abort, self._aborted)

    def _abort(self, event: asyncio.Event | None = None) -> None:
        event = event or self._aborted
        if event is not None and not event.is_set():
            if self.in_flight:
                log.warning("drain deadline passed: aborting %d request(s)", self.in_flight)
            event.set()

    async def finish(self, grace: float = 5.0) -> int:
        """Drain to the end (for the lifespan's shutdown): wait for in-flight requests until the
        deadline, abort the rest, give them ``grace`` seconds to unwind; return how many were
        still in flight at the deadline."""
        self.begin()
        if self._aborted is None or self.deadline is None:
            return 0
        if await self._wait_idle(self.deadline):
            if self._timer is not None:
                self._timer.cancel()
            return 0
        remaining = self.in_flight
        self._abort()
        if not await self._wait_idle(time.monotonic() + grace):
            log.error("%d request(s) did not unwind after the drain deadline", self.in_flight)
        return remaining

    async def _wait_idle(self, until: float) -> bool:
        while self.in_flight > 0:
            if time.monotonic() >= until:
                return False
            await asyncio.sleep(0.02)
        return True

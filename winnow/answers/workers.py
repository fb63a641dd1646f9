"""The sympy half of reading answers runs in worker processes; async code never waits for one.

What :mod:`winnow.answers.final` cannot read in-process (variables, constants, functions, fractional
powers) goes to :mod:`winnow.answers.symbolic` in a worker of :mod:`winnow.answers.sandbox`
(:func:`call`),
with a hard deadline of :data:`ANSWER_DEADLINE` seconds: a worker past it is killed and
replaced. A flood of such answers queues for :data:`WORKERS` workers, each caller at most
``_WORKER_WAIT`` seconds, then :class:`Unavailable`: it is not served.

The functions of :mod:`winnow.answers.final` are synchronous and may wait for a worker (up to the
deadline, plus the bounded wait for a free worker): async code calls them through
:func:`off_loop`, which runs them inline when nothing needs a worker and in a thread otherwise.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from winnow.answers import sandbox

__all__ = ["ANSWER_DEADLINE", "WORKERS", "Unavailable", "call", "off_loop", "start_workers"]

T = TypeVar("T")

ANSWER_DEADLINE = 2.0  # seconds a worker may spend on one symbolic answer (or comparison)
WORKERS = 2  # worker processes for the symbolic part
_WORKER_WAIT = 15.0  # seconds a call waits for a free worker (a flood queues, it is not served)


class _NeedsWorker(Exception):
    """Raised instead of waiting for a worker when the caller runs on an event loop."""


class Unavailable(Exception):
    """No worker could take the call in time (not cached: the next call tries again)."""


_local = threading.local()
_pool_lock = threading.Lock()
_pool: sandbox.Pool | None = None
_executor: ThreadPoolExecutor | None = None


def _workers() -> sandbox.Pool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = sandbox.Pool(
                "winnow.answers.symbolic", size=WORKERS, deadline=ANSWER_DEADLINE, wait=_WORKER_WAIT
            )
            atexit.register(_pool.close)
        return _pool


def start_workers(wait: float | None = None) -> bool:
    """Start the worker processes (in the background); with ``wait``, wait until one is ready
    (at most that many seconds) and say whether one is."""
    pool = _workers()
    pool.start()
    return pool.ready(wait) if wait is not None else True


def call(function: str, *args: Any) -> Any:
    """``winnow.answers.symbolic.<function>(*args)`` in a worker; raises the pool's
    :class:`~winnow.answers.sandbox.DeadlineExceeded` or
    :class:`~winnow.answers.sandbox.WorkerError`, or
    :class:`Unavailable` when no worker is free in time."""
    if getattr(_local, "inline", False):
        raise _NeedsWorker
    try:
        return _workers().call(function, *args)
    except sandbox.PoolUnavailable as exc:
        raise Unavailable(str(exc)) from None


async def off_loop(fn: Callable[..., T], *args: Any, inline: bool = True) -> T:
    """``fn(*args)`` for async code: inline when it needs no worker (plain numbers: no thread
    hop), else in a thread of this module's own pool, so the event loop never waits for sympy.
    ``inline=False`` goes to the thread at once (large batches)."""
    if inline:
        _local.inline = True
        try:
            return fn(*args)
        except _NeedsWorker:
            pass
        finally:
            _local.inline = False
    global _executor
    with _pool_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(2 * WORKERS, thread_name_prefix="winnow-answers")
    return await asyncio.get_running_loop().run_in_executor(_executor, fn, *args)

"""``strategy.reference`` is checked after admission, in a worker process with a deadline.

The check (:func:`winnow.answers.final.reference_problem`: a reference past the answer bounds is a
400 before any sampling) reads client text with regular expressions, and Python's ``re`` holds
the GIL for a whole match: in a thread as much as on the event loop, a hostile reference would
stall every request and /health for as long as the match takes. In a worker of
:mod:`winnow.answers.sandbox` it cannot: past :data:`DEADLINE` the worker is killed and the
reference refused. The request is admitted first, so at most ``--max-running-requests`` checks
wait for the :data:`WORKERS` workers; one that finds none free in time is told to retry (429).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading

from winnow.answers import sandbox
from winnow.server.errors import APIError
from winnow.strategies.base import StrategyParams
from winnow.strategies.registry import StrategyError

log = logging.getLogger("winnow.server")

DEADLINE = 2.0  # seconds one reference may take to check
WORKERS = 2
WAIT = 10.0  # seconds a check waits for a free worker, then 429

_lock = threading.Lock()
_pool: sandbox.Pool | None = None


def _workers() -> sandbox.Pool:
    global _pool
    with _lock:
        if _pool is None:
            _pool = sandbox.Pool("winnow.answers.final", size=WORKERS, deadline=DEADLINE, wait=WAIT)
            atexit.register(_pool.close)
        return _pool


def start_workers() -> None:
    """Start the workers in the background (the app's start-up), not in the first request."""
    _workers().start()


async def check_reference(params: StrategyParams) -> None:
    """Raise :class:`StrategyError` (a 400) if the strategy's ``reference`` can never be a gold
    answer, or cannot be read within :data:`DEADLINE`."""
    reference = getattr(params, "reference", None)
    if not isinstance(reference, str) or not reference.strip():
        return
    try:
        problem = await asyncio.to_thread(_workers().call, "reference_problem", reference)
    except sandbox.DeadlineExceeded:
        raise StrategyError(
            f"invalid strategy.reference: it could not be read within {DEADLINE:g} s",
            "strategy.reference",
        ) from None
    except sandbox.PoolUnavailable:
        raise APIError(
            429,
            "server is at capacity (checking references); retry",
            code="overloaded",
            headers={"Retry-After": "1"},
        ) from None
    except sandbox.WorkerError as exc:  # the reward that reads it still refuses a bad one
        log.warning("strategy.reference could not be checked: %s", exc)
        return
    if problem is not None:
        raise StrategyError(f"invalid strategy.reference: {problem}", "strategy.reference")

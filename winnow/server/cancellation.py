"""Cancellation flows down: a client that leaves, a request past its wall time, or a drain past
its deadline cancels the request's work, which aborts every engine call it started."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

from fastapi import Request

from winnow.server.admission import Admission, Slot
from winnow.server.errors import APIError
from winnow.server.lifecycle import Drain


async def wait_disconnect(request: Request) -> None:
    """Return once the client has gone (the body is read already, so this only sees that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def admit(admission: Admission, request: Request) -> Slot:
    """A running place; a client that leaves while its request waits in the queue leaves the
    queue (a 499 nobody reads) instead of holding a place there."""
    acquire = asyncio.ensure_future(admission.acquire())
    watcher = asyncio.ensure_future(wait_disconnect(request))
    admitted = False
    try:
        done, _ = await asyncio.wait({acquire, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if acquire in done:
            admitted = True
            return acquire.result()
        raise APIError(499, "client disconnected while queued", code="client_disconnected")
    finally:
        watcher.cancel()
        if not acquire.done():
            acquire.cancel()
        elif not admitted and not acquire.cancelled() and acquire.exception() is None:
            acquire.result().release()  # admitted just as the client left
        with contextlib.suppress(BaseException):
            await asyncio.gather(acquire, watcher, return_exceptions=True)


async def run_until_disconnect(
    request: Request, work: Awaitable[Any], timeout: float | None, drain: Drain
) -> Any:
    """Run ``work``; cancel it (aborting its engine calls) if the client leaves, time runs out,
    or the drain's deadline passes."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_disconnect(request))
    aborter = asyncio.ensure_future(drain.wait_aborted())
    try:
        done, _ = await asyncio.wait(
            {task, watcher, aborter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            return task.result()
        if watcher in done:
            raise APIError(499, "client disconnected", code="client_disconnected")
        if aborter in done:
            raise drain.abort_error()
        raise APIError(504, f"request exceeded its wall time of {timeout:g} s", code="timeout")
    finally:
        for t in (task, watcher, aborter):
            t.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(task, watcher, aborter, return_exceptions=True)

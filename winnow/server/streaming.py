"""Server-sent events: a request's jobs run while their output goes out as chunks.

A strategy that streams sends deltas to its request's sink as it goes; one that decides at the
end returns, and its chosen answers go out whole. Once the stream has begun its HTTP status is
sent, so a failure is reported in-band (an OpenAI error object, then ``[DONE]``) and
:attr:`EventStream.status` keeps how it ended. Leaving the stream early (the client went away)
cancels the jobs, which aborts their engine work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from winnow.protocol.responses import Usage
from winnow.server.admission import Slot
from winnow.server.errors import APIError, as_api_error, error_body
from winnow.server.jobs import Job
from winnow.server.lifecycle import Drain
from winnow.server.render import Chunks, total_usage, winnow_info
from winnow.strategies.base import ChoiceDelta

log = logging.getLogger("winnow.server")

Deltas = tuple[int, Sequence[ChoiceDelta]]  # (the prompt's first choice index, its deltas)


class QueueSink:
    """Where a streaming strategy sends its deltas; the event stream drains it."""

    def __init__(self, queue: asyncio.Queue[Deltas], offset: int):
        self._queue = queue
        self._offset = offset
        self.used = False

    async def send(self, deltas: Sequence[ChoiceDelta]) -> None:
        self.used = True
        await self._queue.put((self._offset, deltas))


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


@dataclass(eq=False, kw_only=True)
class EventStream:
    """The SSE body of one streamed request; iterate it once.

    ``run`` runs the jobs (their sinks set first); ``drain`` aborts the stream at the shutdown
    deadline. ``on_first_output`` is called with the first chunk of output and ``on_usage`` with
    the usage it sends (``include_usage``). :attr:`status` says how the stream ended, for
    /metrics: 200; 500 once an error went out in-band; 499 when it was left early.
    """

    jobs: Sequence[Job]
    run: Callable[[], Awaitable[None]]
    chunks: Chunks
    include_usage: bool
    timeout: float | None
    drain: Drain
    on_first_output: Callable[[], None]
    on_usage: Callable[[Usage], None]
    status: int = field(default=200, init=False)
    _sent: set[int] = field(default_factory=set, init=False)  # choice indices already sent
    _first: bool = field(default=True, init=False)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async with contextlib.aclosing(self._events()) as events:
                async for event in events:
                    yield event
        except BaseException:
            self.status = 499  # the client left, or the response was cut off
            raise

    async def _events(self) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[Deltas] = asyncio.Queue(maxsize=256)
        for job in self.jobs:
            job.request.sink = QueueSink(queue, job.index_offset)
        task = asyncio.ensure_future(self.run())
        aborter = asyncio.ensure_future(self.drain.wait_aborted())
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        getter: asyncio.Future[Deltas] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
                done, _ = await asyncio.wait(
                    {getter, task, aborter}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    yield self._output(*getter.result())
                    continue
                getter.cancel()
                if task in done:
                    break
                if aborter in done:
                    raise self.drain.abort_error()
                raise TimeoutError
            task.result()  # re-raise a strategy failure
            while not queue.empty():  # deltas sent just before the end
                yield self._output(*queue.get_nowait())
            for job in self.jobs:  # the answers of strategies that decide at the end
                assert job.result is not None
                if not job.result.streamed:
                    yield self._output(job.index_offset, job.result.choices)
            info = winnow_info(self.jobs)
            if info is not None and info.trace:  # asked for: one chunk with no choices
                yield sse(self.chunks.trace(info))
            if self.include_usage:
                usage = total_usage(self.jobs)
                self.on_usage(usage)
                yield sse(self.chunks.usage(usage))
            yield sse("[DONE]")
        except TimeoutError:
            message = f"request exceeded its wall time of {self.timeout:g} s"
            yield self._error(APIError(504, message, code="timeout"))
            yield sse("[DONE]")
        except Exception as exc:  # the stream has begun: report in-band, as OpenAI does
            err = as_api_error(exc)
            if err.status >= 500 and not isinstance(exc, APIError):
                log.error("strategy failed while streaming: %r", exc, exc_info=err.status == 500)
            yield self._error(err)
            yield sse("[DONE]")
        finally:
            aborter.cancel()
            if getter is not None:
                getter.cancel()  # the client left while we waited for output
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    def _output(self, offset: int, deltas: Sequence[Any]) -> bytes:
        """A chunk of a prompt's deltas (or finished choices), at that prompt's place."""
        shifted = [
            ChoiceDelta(offset + d.index, d.text, d.token_ids, d.finish_reason, d.logprobs)
            for d in deltas
        ]
        fresh = {d.index for d in shifted} - self._sent  # chat sends the role with these
        self._sent.update(fresh)
        if self._first:
            self.on_first_output()
            self._first = False
        return sse(self.chunks.choices(shifted, fresh))

    def _error(self, err: APIError) -> bytes:
        self.status = 500
        return sse(error_body(err.status, err.message, err.param, err.code))


class SlotStreamingResponse(StreamingResponse):
    """Releases the request's slot even if the body never starts (client gone before), and
    holds the whole response, sending included, to the wall time: a client that stops reading
    without closing is cut off then, and its engine work aborted."""

    def __init__(self, slot: Slot, timeout: float | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slot = slot
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            # past the wall time the stream itself ends with an in-band 504; this backstop only
            # fires when sending is stuck
            limit = None if self.timeout is None else self.timeout + 5
            await asyncio.wait_for(super().__call__(scope, receive, send), limit)
        except TimeoutError:
            log.warning("stream cut off: the client did not read it within %s s", limit)
        finally:
            self._slot.release()
            # Starlette abandons the body iterator when the client leaves or the send is
            # cancelled; close it now (cancelling the strategy, aborting its engine work) instead
            # of whenever the garbage collector finalizes it
            with contextlib.suppress(Exception):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]

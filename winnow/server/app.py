"""The FastAPI app: routes, auth and the body-size guard. The request path lives in serving.py."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from winnow import strategies
from winnow.engine.base import Engine, EngineError, EngineUnavailable
from winnow.protocol.requests import ChatCompletionRequest, CompletionRequest
from winnow.protocol.responses import (
    ChatCompletionResponse,
    CompletionResponse,
    ModelCard,
    ModelList,
    Usage,
    new_id,
    now,
)
from winnow.protocol.rewards import RewardCard, RewardList, RewardRequest, RewardResponse
from winnow.rewards.registry import RewardSet
from winnow.server import openapi, serving
from winnow.server.admission import Slot
from winnow.server.errors import APIError, error_body, install_error_handlers, status_for
from winnow.server.metrics import Metrics
from winnow.server.rewards_api import score_items
from winnow.server.serving import ServerState
from winnow.settings import Settings

log = logging.getLogger("winnow.server")


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            error_body(413, f"request body exceeds {self.limit} bytes", None, "body_too_large"),
            status_code=413,
        )
        await response({"type": "http"}, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _auth(settings: Settings) -> Callable[[Request], None]:
    expected = settings.api_key.get_secret_value().encode() if settings.api_key else None

    def check(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            raise APIError(
                401,
                "missing or invalid API key (send 'Authorization: Bearer KEY')",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def create_app(
    settings: Settings,
    engine: Engine,
    rewards: RewardSet | None = None,
    manage_engine: bool = True,
) -> ASGIApp:
    """Build the app around an engine and rewards; with ``manage_engine`` the app starts and
    stops both (rewards start after the engine: the judge reward uses it)."""
    metrics = Metrics()
    state = ServerState(settings, engine, metrics, rewards or RewardSet())
    state.rewards.call_timeout = settings.reward_timeout
    for reward in state.rewards.infos():
        batcher = getattr(state.rewards.get(reward.name), "batcher", None)
        if batcher is not None:
            batcher.observer = metrics
            batcher.pass_timeout = settings.reward_timeout

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        assert state.drain is not None and state.admission is not None
        admission = state.admission
        state.drain.bind(asyncio.get_running_loop(), lambda: admission.running + admission.queued)
        if manage_engine:
            await engine.start()
            await state.rewards.start()
        try:
            yield
        finally:
            await state.drain.finish()  # a no-op when uvicorn drained already (SIGTERM)
            if manage_engine:
                await state.rewards.shutdown()
                await engine.shutdown()

    app = FastAPI(title="winnow", version="0.1.0", lifespan=lifespan)
    app.state.winnow = state
    install_error_handlers(app)
    openapi.install(app)
    auth = Depends(_auth(settings))

    @app.get("/health")
    async def health() -> dict[str, str]:
        try:
            await engine.check_health()
        except EngineError as exc:
            metrics.engine_healthy.set(0)
            state.engine_suspect = True
            raise APIError(503, f"engine unhealthy: {exc}", code="engine_unavailable") from None
        metrics.engine_healthy.set(1)
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.engine_running.set(await engine.running_requests())
        if state.admission is not None:
            metrics.queued.set(state.admission.queued)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/playground", include_in_schema=False)
    async def playground() -> HTMLResponse:
        """The playground page: static, no key in it (it asks for one when the API needs it)."""
        return HTMLResponse(_playground_html())

    @app.get("/v1/models", dependencies=[auth])
    async def models() -> ModelList:
        card = ModelCard(
            id=state.model_name, created=state.created, max_model_len=engine.info.max_model_len
        )
        return ModelList(data=[card])

    @app.get("/v1/strategies", dependencies=[auth])
    async def list_strategies() -> dict[str, Any]:
        data = []
        for name in strategies.names():
            entry = strategies.get(name)
            data.append(
                {
                    "name": name,
                    "description": entry.summary,
                    "streams_tokens": entry.streams,
                    "parameters": entry.params.model_json_schema(),
                }
            )
        return {"object": "list", "data": data}

    @app.get("/v1/rewards", dependencies=[auth])
    async def list_rewards() -> RewardList:
        cards = [
            RewardCard(
                name=i.name,
                kind=i.kind,
                backend=i.backend,
                scale=i.scale,
                description=i.description,
                extra=dict(i.extra),
            )
            for i in state.rewards.infos()
        ]
        return RewardList(data=cards)

    @app.post("/v1/rewards", dependencies=[auth])
    async def score_rewards(body: RewardRequest, request: Request) -> RewardResponse:
        assert state.drain is not None
        state.drain.check_open()
        return await serving.run_until_disconnect(
            request, score_items(state, body), settings.request_timeout
        )

    @app.post("/v1/completions", dependencies=[auth], response_model=CompletionResponse)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await _serve(state, "completions", body, request)

    @app.post("/v1/chat/completions", dependencies=[auth], response_model=ChatCompletionResponse)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        return await _serve(state, "chat", body, request)

    return BodyLimit(app, settings.max_body_bytes) if settings.max_body_bytes else app


@functools.cache
def _playground_html() -> str:
    return resources.files("winnow.server").joinpath("static/playground.html").read_text("utf-8")


async def _serve(
    state: ServerState,
    endpoint: str,
    body: CompletionRequest | ChatCompletionRequest,
    request: Request,
) -> Any:
    if body.model_extra:
        log.info("ignoring unknown fields on %s: %s", endpoint, sorted(body.model_extra))
    metrics = state.metrics
    started = time.perf_counter()
    strategy = "unknown"
    try:
        assert state.drain is not None
        state.drain.check_open()
        jobs = await serving.prepare(state, body)
    except APIError as exc:
        metrics.requests.labels(endpoint, strategy, str(exc.status)).inc()
        raise
    strategy = jobs[0].strategy
    timeout = state.settings.request_timeout
    assert state.admission is not None
    try:
        await _check_engine(state)
        slot = await serving.admit(state.admission, request)
    except APIError as exc:
        metrics.requests.labels(endpoint, strategy, str(exc.status)).inc()
        raise
    if body.stream:
        return _stream(state, endpoint, body, jobs, started, timeout, slot)

    metrics.in_flight.labels(strategy).inc()
    status = "200"
    try:
        await serving.run_until_disconnect(request, _gather(state, jobs), timeout)
        if isinstance(body, ChatCompletionRequest):
            response: Any = serving.chat_response(state, jobs)
        else:
            response = await serving.completion_response(state, body, jobs)
        metrics.latency.labels(strategy).observe(time.perf_counter() - started)
        _count(state, strategy, response.usage)
        return response
    except Exception as exc:
        status = str(status_for(exc))
        if isinstance(exc, EngineUnavailable):
            state.engine_suspect = True
        raise
    finally:
        slot.release()
        metrics.in_flight.labels(strategy).dec()
        metrics.requests.labels(endpoint, strategy, status).inc()


async def _check_engine(state: ServerState) -> None:
    """Once a request or /health found the engine unavailable, ask it before admitting more:
    a 503 at once instead of queueing (or a 429) for an engine that is dead."""
    if not state.engine_suspect:
        return
    try:
        await state.engine.check_health()
    except EngineError as exc:
        raise APIError(503, f"engine unavailable: {exc}", code="engine_unavailable") from None
    state.engine_suspect = False


async def _gather(state: ServerState, jobs: list[serving.Job]) -> None:
    await asyncio.gather(*(serving.run_job(state, j) for j in jobs))


def _count(state: ServerState, strategy: str, usage: Usage | None) -> None:
    if usage is None or usage.winnow is None:
        return
    m = state.metrics
    w = usage.winnow
    m.tokens.labels(strategy, "prompt").inc(usage.prompt_tokens)
    m.tokens.labels(strategy, "completion").inc(usage.completion_tokens)
    m.tokens.labels(strategy, "generated").inc(w.generated_tokens)
    m.tokens.labels(strategy, "discarded").inc(w.discarded_tokens)
    m.tokens.labels(strategy, "cached").inc(w.cached_tokens)
    m.tokens.labels(strategy, "prefilled").inc(w.prefilled_tokens)
    m.engine_calls.labels(strategy).inc(w.engine_calls)
    m.reward_calls.labels(strategy).inc(w.reward_calls)


def _stream(
    state: ServerState,
    endpoint: str,
    body: CompletionRequest | ChatCompletionRequest,
    jobs: list[serving.Job],
    started: float,
    timeout: float | None,
    slot: Slot,
) -> StreamingResponse:
    strategy = jobs[0].strategy
    metrics = state.metrics
    response_id = new_id("chatcmpl" if endpoint == "chat" else "cmpl")
    created = now()
    if isinstance(body, ChatCompletionRequest):
        make_chunk = serving.chat_chunk_maker(state, response_id, created)
        obj = "chat.completion.chunk"
    else:
        make_chunk = serving.completion_chunk_maker(state, response_id, created)
        obj = "text_completion"
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def usage_chunk(usage: Usage) -> dict[str, Any]:
        _count(state, strategy, usage)
        return {
            "id": response_id,
            "object": obj,
            "created": created,
            "model": state.model_name,
            "choices": [],
            "usage": usage.model_dump(),
        }

    def first_token() -> None:
        metrics.ttft.labels(strategy).observe(time.perf_counter() - started)

    async def body_iter() -> AsyncIterator[bytes]:
        metrics.in_flight.labels(strategy).inc()
        status = "200"
        try:
            async for chunk in serving.stream_jobs(
                state, jobs, make_chunk, usage_chunk, include_usage, timeout, first_token
            ):
                if chunk.startswith(b'data: {"error"'):
                    status = "500"
                yield chunk
            metrics.latency.labels(strategy).observe(time.perf_counter() - started)
        except BaseException:
            status = "499"
            raise
        finally:
            slot.release()
            metrics.in_flight.labels(strategy).dec()
            metrics.requests.labels(endpoint, strategy, status).inc()

    return _SlotStreamingResponse(slot, timeout, body_iter(), media_type="text/event-stream")


class _SlotStreamingResponse(StreamingResponse):
    """Releases the request's slot even if the body never starts (client gone before), and
    holds the whole response, sending included, to the wall time: a client that stops reading
    without closing is cut off then, and its engine work aborted."""

    def __init__(self, slot: Slot, timeout: float | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slot = slot
        self._timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            # past the wall time the stream itself ends with an in-band 504; this backstop only
            # fires when sending is stuck
            limit = None if self._timeout is None else self._timeout + 5
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

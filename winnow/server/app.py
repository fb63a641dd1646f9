"""The FastAPI app: its state, its lifespan, and thin routes. A completion or chat request's
whole path is :mod:`winnow.server.serving`; what guards every route is :mod:`.guards`."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp

from winnow import strategies
from winnow.engine.base import Engine, EngineError
from winnow.protocol.requests import ChatCompletionRequest, CompletionRequest
from winnow.protocol.responses import (
    ChatCompletionResponse,
    CompletionResponse,
    ModelCard,
    ModelList,
)
from winnow.protocol.rewards import RewardCard, RewardList, RewardRequest, RewardResponse
from winnow.rewards.registry import RewardSet
from winnow.server import openapi, references
from winnow.server.errors import APIError, install_error_handlers
from winnow.server.guards import BodyLimit, api_key_check
from winnow.server.metrics import Metrics
from winnow.server.rewards_api import RewardServing
from winnow.server.serving import ChatServing, CompletionServing, ServerState
from winnow.settings import Settings


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
    state.rewards.tap = settings.reward_tap
    for reward in state.rewards.infos():
        batcher = getattr(state.rewards.get(reward.name), "batcher", None)
        if batcher is not None:
            batcher.observer = metrics
            batcher.pass_timeout = settings.reward_timeout

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        admission = state.admission
        state.drain.bind(asyncio.get_running_loop(), lambda: admission.running + admission.queued)
        if manage_engine:
            await engine.start()
            await state.rewards.start()
        if any(info.backend == "verifier" for info in state.rewards.infos()):
            references.start_workers()  # in the background: strategy.reference is checked there
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
    auth = Depends(api_key_check(settings))

    @app.get("/health")
    async def health() -> dict[str, str]:
        try:
            await engine.check_health()
        except EngineError as exc:
            metrics.engine_healthy.set(0)
            state.engine_suspect = True
            # the message may name remote URLs: error bodies redact them (winnow.server.redaction)
            raise APIError(503, f"engine unhealthy: {exc}", code="engine_unavailable") from None
        metrics.engine_healthy.set(1)
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.engine_running.set(await engine.running_requests())
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

    completion, chat, scoring = CompletionServing(state), ChatServing(state), RewardServing(state)

    @app.post("/v1/rewards", dependencies=[auth])
    async def score_rewards(body: RewardRequest, request: Request) -> RewardResponse:
        return await scoring.serve(body, request)

    @app.post("/v1/completions", dependencies=[auth], response_model=CompletionResponse)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await completion.serve(body, request)

    @app.post("/v1/chat/completions", dependencies=[auth], response_model=ChatCompletionResponse)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        return await chat.serve(body, request)

    return BodyLimit(app, settings.max_body_bytes) if settings.max_body_bytes else app


@functools.cache
def _playground_html() -> str:
    return resources.files("winnow.server").joinpath("static/playground.html").read_text("utf-8")

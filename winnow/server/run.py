"""Run the server: build the engine, wrap it in the app, serve with uvicorn."""

from __future__ import annotations

from types import FrameType
from typing import Any

import uvicorn

from winnow.engine import build_engine
from winnow.rewards.registry import build_rewards, default_configs, load_configs
from winnow.server.app import create_app
from winnow.server.lifecycle import Drain
from winnow.server.serving import ServerState
from winnow.settings import Settings


def serve(settings: Settings) -> None:
    engine = build_engine(settings)
    rewards = build_rewards(
        load_configs(settings.rewards_config)
        if settings.rewards_config
        else default_configs(default_model=settings.model is None),
        default_model_dir=getattr(engine, "model", None) if settings.model is None else None,
        engine=engine,
        prefix_cache_bytes=settings.reward_prefix_cache_mib * 2**20,
    )
    app = create_app(settings, engine, rewards)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # a backstop: the app's own drain aborts what is left at --shutdown-timeout
        timeout_graceful_shutdown=int(settings.shutdown_timeout) + 10,
    )
    DrainingServer(config, app_state(app).drain).run()


class DrainingServer(uvicorn.Server):
    """uvicorn, telling the app at the first SIGTERM / SIGINT so that it starts draining (new
    requests 503, in-flight ones until --shutdown-timeout, then aborted) while uvicorn waits."""

    def __init__(self, config: uvicorn.Config, drain: Drain | None) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain is not None:
            self.drain.begin()
        super().handle_exit(sig, frame)


def app_state(app: Any) -> ServerState:
    """The ServerState inside an app made by create_app (possibly wrapped by the body limit)."""
    inner = getattr(app, "app", app)
    return inner.state.winnow

"""Run the server: build the engine, wrap it in the app, serve with uvicorn."""

from __future__ import annotations

import uvicorn

from winnow.engine import build_engine
from winnow.rewards.registry import build_rewards, default_configs, load_configs
from winnow.server.app import create_app
from winnow.settings import Settings


def serve(settings: Settings) -> None:
    engine = build_engine(settings)
    rewards = build_rewards(
        load_configs(settings.rewards_config)
        if settings.rewards_config
        else default_configs(default_model=settings.model is None),
        default_model_dir=getattr(engine, "model", None) if settings.model is None else None,
        engine=engine,
    )
    app = create_app(settings, engine, rewards)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )

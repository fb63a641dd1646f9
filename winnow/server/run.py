"""Run the server: build the engine, wrap it in the app, serve with uvicorn."""

from __future__ import annotations

import uvicorn

from winnow.engine import build_engine
from winnow.server.app import create_app
from winnow.settings import Settings


def serve(settings: Settings) -> None:
    engine = build_engine(settings)
    app = create_app(settings, engine)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )

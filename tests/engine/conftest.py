"""The real engine's fixtures. The engine starts once per test session, behind a real uvicorn
server (:func:`tests.support.serving.serve_in_thread`).

The engine and the server live in a background thread with its own event loop (as they would in
`winnow serve`); tests talk to the server over loopback with real clients, and run engine
coroutines on that loop with :meth:`LiveServer.run`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.serving import LiveServer, serve_in_thread


@pytest.fixture(scope="session")
def default_model_dir() -> str:
    from winnow.models.default_model import build_default_model
    from winnow.settings import default_data_dir

    return str(build_default_model(default_data_dir()))


@pytest.fixture(scope="session")
def live_server(default_model_dir: str) -> Iterator[LiveServer]:
    from winnow.engine.vllm_local import VllmEngine
    from winnow.rewards.registry import build_rewards, default_configs
    from winnow.server.app import create_app
    from winnow.settings import Settings, default_data_dir

    settings = Settings(api_key="test-key", request_timeout=120, max_n=32)
    engine = VllmEngine(
        default_model_dir,
        engine_args={"max_model_len": 4096},
        cache_dir=default_data_dir() / "cache",
        kv_cache_gib=1,
    )
    rewards = build_rewards(
        default_configs(default_model=True), default_model_dir=default_model_dir, engine=engine
    )

    async def make_app() -> object:
        await engine.start()
        await rewards.start()
        return create_app(settings, engine, rewards, manage_engine=False)

    async def close() -> None:
        await rewards.shutdown()
        await engine.shutdown()

    started = time.monotonic()
    with serve_in_thread(
        make_app=make_app,
        close=close,
        engine=engine,
        rewards=rewards,
        api_key="test-key",
        timeout=600,
    ) as server:
        print(f"\nlive server up in {time.monotonic() - started:.1f} s")
        yield server

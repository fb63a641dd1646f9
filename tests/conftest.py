"""Shared fixtures. The real engine starts once per test session, behind a real uvicorn server.

The engine and the server live in a background thread with its own event loop (as they would in
`winnow serve`); tests talk to the server over loopback with real clients, and run engine
coroutines on that loop with :meth:`LiveServer.run`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from winnow.clients.launch import free_port

T = TypeVar("T")


@dataclass
class LiveServer:
    engine: Any
    rewards: Any
    loop: asyncio.AbstractEventLoop
    base_url: str  # ends with /v1
    api_key: str

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 300) -> T:
        """Run a coroutine on the server's loop (where the engine lives) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_idle(self, timeout: float = 15.0) -> int:
        from winnow.engine.vllm_local import wait_idle

        return self.run(wait_idle(self.engine, timeout))


@pytest.fixture(scope="session")
def default_model_dir() -> str:
    from winnow.models.default_model import build_default_model
    from winnow.settings import default_data_dir

    return str(build_default_model(default_data_dir()))


@pytest.fixture(scope="session")
def live_server(default_model_dir: str) -> Iterator[LiveServer]:
    import uvicorn

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
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    rewards = build_rewards(
        default_configs(default_model=True), default_model_dir=default_model_dir, engine=engine
    )

    async def main() -> None:
        try:
            await engine.start()
            await rewards.start()
            app = create_app(settings, engine, rewards, manage_engine=False)
            config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
            server = uvicorn.Server(config)
            holder["server"] = server
            task = asyncio.ensure_future(server.serve())
            while not server.started and not task.done():
                await asyncio.sleep(0.05)
            ready.set()
            await task
        except BaseException as exc:
            holder["error"] = exc
            ready.set()
            raise
        finally:
            await rewards.shutdown()
            await engine.shutdown()

    def run_loop() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(main())
        finally:  # finish what the engine left behind before the loop goes away
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run_loop, daemon=True)
    thread.start()
    started = time.monotonic()
    ready.wait(timeout=600)
    if "error" in holder or "server" not in holder:
        raise RuntimeError(f"live server failed to start: {holder.get('error')!r}")
    print(f"\nlive server up in {time.monotonic() - started:.1f} s")
    yield LiveServer(engine, rewards, loop, f"http://127.0.0.1:{port}/v1", "test-key")
    holder["server"].should_exit = True
    thread.join(timeout=60)


@pytest.fixture(scope="session")
def fake_server() -> Iterator[LiveServer]:
    """The app on the scripted FakeEngine behind a real uvicorn on 127.0.0.1: fast, no model.

    Each request takes about 2 x ``delay`` (the fake sleeps before the first token, then spreads
    ``delay`` over the tokens), so timings are measurable. API key ``fake-key``.
    """
    import uvicorn

    from winnow.engine.fake import FakeEngine
    from winnow.server.app import create_app
    from winnow.settings import Settings

    engine = FakeEngine(delay=0.02)
    app = create_app(Settings(api_key="fake-key", request_timeout=30), engine)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("fake server failed to start")
        time.sleep(0.02)
    base_url = f"http://127.0.0.1:{port}/v1"
    yield LiveServer(engine=engine, rewards=None, loop=loop, base_url=base_url, api_key="fake-key")
    server.should_exit = True
    thread.join(timeout=30)
    loop.close()


@pytest.fixture
def sympy_worker_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The functions asked of the sympy workers from now on (counted, then run as usual): a
    count, not a wall-clock bound, says that work was skipped, on a loaded machine too."""
    from winnow.answers import workers as answer_workers

    calls: list[str] = []
    real = answer_workers.call

    def counted(function: str, *args: object) -> object:
        calls.append(function)
        return real(function, *args)

    monkeypatch.setattr(answer_workers, "call", counted)
    return calls

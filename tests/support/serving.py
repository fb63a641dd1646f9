"""An app served by a real uvicorn on 127.0.0.1, in a background thread with its own event loop
(as it would run in `winnow serve`): the one way the tests serve in a thread.

Tests talk to the server over loopback with real clients, and run coroutines on its loop (where
the engine lives) with :meth:`LiveServer.run`. The real engine's fixture (tests/engine/conftest.py)
passes ``make_app`` and ``close`` so that the engine starts and stops on the server's loop; the
fake-engine fixtures pass the app. Tests that need `winnow serve`'s draining and shutdown use
:class:`winnow.server.background.BackgroundServer` instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

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


@contextmanager
def serve_in_thread(
    app: Any = None,
    *,
    engine: Any,
    rewards: Any = None,
    api_key: str,
    make_app: Callable[[], Awaitable[Any]] | None = None,
    close: Callable[[], Awaitable[None]] | None = None,
    timeout: float = 30,
) -> Iterator[LiveServer]:
    """Serve ``app`` (or the app ``make_app`` returns, awaited on the server's loop) until the
    block ends; ``close`` is awaited on that loop once the server has stopped, however it ended.
    Raises if the server is not listening within ``timeout`` seconds."""
    import uvicorn

    if (app is None) == (make_app is None):
        raise TypeError("serve_in_thread takes app or make_app")
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        try:
            served = app if make_app is None else await make_app()
            config = uvicorn.Config(served, host="127.0.0.1", port=port, log_level="warning")
            server = uvicorn.Server(config)
            holder["server"] = server
            task = asyncio.ensure_future(server.serve())
            while not server.started and not task.done():
                await asyncio.sleep(0.02)
            ready.set()
            await task
        except BaseException as exc:
            holder["error"] = exc
            ready.set()
            raise
        finally:
            if close is not None:
                await close()

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
    ready.wait(timeout=timeout)
    server = holder.get("server")
    if "error" in holder or server is None or not server.started:
        if server is not None:
            server.should_exit = True
        raise RuntimeError(f"server failed to start: {holder.get('error')!r}")
    try:
        yield LiveServer(engine, rewards, loop, f"http://127.0.0.1:{port}/v1", api_key)
    finally:
        server.should_exit = True
        thread.join(timeout=60)

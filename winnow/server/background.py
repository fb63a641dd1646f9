"""Serve an app with uvicorn on 127.0.0.1 in a background thread with its own event loop: for
tests and fake-engine benchmarks that need a real socket (slow clients, disconnects, shutdown).

The listening socket is bound here, on a port the system picks, before uvicorn starts: the port
is known at once and no other process can take it in between.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn

from winnow.server.run import DrainingServer, app_state
from winnow.server.serving import ServerState

T = TypeVar("T")


class BackgroundServer:
    def __init__(self, app: Any, *, graceful_backstop: float = 10.0) -> None:
        self.app = app
        self.state: ServerState = app_state(app)
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.base_url = f"http://127.0.0.1:{self.port}"
        assert self.state.drain is not None
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=int(self.state.drain.timeout + graceful_backstop),
        )
        self.server = DrainingServer(config, self.state.drain)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve(sockets=[self.socket]))
        finally:
            self.loop.close()
            self.socket.close()

    def start(self, timeout: float = 30) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("background server failed to start")
            time.sleep(0.02)
        return self

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the server's loop (e.g. to ask the engine) and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def terminate(self) -> None:
        """What SIGTERM does to `winnow serve`: drain, then stop."""
        self.server.handle_exit(signal.SIGTERM, None)

    def join(self, timeout: float = 60) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, timeout: float = 60) -> None:
        if self._thread.is_alive():
            self.terminate()
            self.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""GET /health every 100 ms from another process while a block runs, and how long each took.

Another process, not a thread: a server stalled by C code that holds the GIL (a regular
expression, a big-integer power) freezes every thread of its process, a polling thread too,
which then sends nothing while the stall lasts and measures nothing. A poller of its own is
never frozen: each poll sent during a stall waits for it, and says so.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

_POLLER = r"""
import http.client, sys, time, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
every = float(sys.argv[2])
while True:
    started = time.perf_counter()
    try:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        conn.request("GET", "/health")
        ok = conn.getresponse().status == 200
        conn.close()
    except OSError:
        ok = False
    took = time.perf_counter() - started
    print(took if ok else "inf", flush=True)
    time.sleep(max(every - took, 0.0))
"""


class HealthPolls:
    """``with HealthPolls(base_url) as polls: ...`` then :meth:`assert_responsive`."""

    def __init__(self, base_url: str, every: float = 0.1) -> None:
        self.base_url = base_url.removesuffix("/v1")
        self.every = every
        self.took: list[float] = []
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self.took.append(float(line))

    def _wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.took) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def __enter__(self) -> HealthPolls:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _POLLER, self.base_url, str(self.every)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._wait_for(1, 30)  # the poller runs and the server answers
        assert self.took and self.took[0] < 30, self.took
        self.took.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        # two polls at least, however fast the block was; bounded: a stall fails the check
        self._wait_for(2, 5)
        assert self._process is not None
        self._process.terminate()
        self._process.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)

    @property
    def worst(self) -> float:
        return max(self.took, default=float("inf"))

    def assert_responsive(self, within: float = 1.0) -> None:
        assert len(self.took) >= 2, self.took
        slow = [round(t, 2) for t in self.took if t > within]
        assert not slow, f"/health took {slow} s ({len(slow)} of {len(self.took)} polls)"

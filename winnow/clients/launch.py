"""Start an OpenAI-compatible server (winnow or vLLM) as a subprocess, wait until it is healthy,
and always stop its whole process group: for benchmarks and tests that run real servers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a server started next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    """Poll ``url``/health until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise RuntimeError(f"server not healthy after {timeout:.0f} s:\n{_tail(log)}")


def stop_process_group(proc: subprocess.Popen[bytes], grace: float = 60) -> None:
    """SIGTERM the group (servers drain), then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def server_process(
    command: Sequence[str],
    url: str,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 900,
) -> Iterator[subprocess.Popen[bytes]]:
    """The server up and healthy at ``url`` (no /v1), its output in ``log``; always stopped."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(command),
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(proc, url, log, timeout)
        yield proc
    finally:
        stop_process_group(proc)


def _tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"

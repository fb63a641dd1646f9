"""A few worker processes that run one module's functions, each call under a hard deadline.

Why processes: a thread cannot be stopped, and a signal-based timeout only works on the main
thread and only between bytecodes (a big-integer power in C holds the GIL to its end; SIGTERM
itself was ignored that way). A process can be killed at the deadline whatever it is doing.

Each worker is ``python -m winnow.answers.sandbox MODULE`` with pipes for stdin/stdout: one JSON
line per
call (``[function, args]``), one JSON line per answer (``["ok", result]`` or ``["error", text]``).
It imports the module, runs its ``warm`` function when there is one, and says it is ready. It
limits its own address space (``RLIMIT_AS``) and arms a real-time alarm around every call (the
default SIGALRM action ends it even if this process is gone and cannot kill it), and it exits
when its stdin closes, so no worker outlives its parent by more than that alarm.

:meth:`Pool.call` takes an idle worker (waiting at most ``wait`` seconds for one: a hostile
flood queues, it does not grow the pool), sends the call and waits ``deadline`` seconds for the
answer; past it the worker is killed, a replacement starts in the background, and the call
raises :class:`DeadlineExceeded`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("winnow.answers.sandbox")

__all__ = ["DeadlineExceeded", "Pool", "PoolUnavailable", "WorkerError"]


class DeadlineExceeded(Exception):
    """The call ran past its deadline; its worker was killed."""


class PoolUnavailable(Exception):
    """No worker became free (or could be started) within the wait."""


class WorkerError(Exception):
    """The function raised in the worker, or the worker died."""


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen[bytes]
    buffer: bytearray = field(default_factory=bytearray)

    @property
    def out(self) -> int:
        assert self.process.stdout is not None
        return self.process.stdout.fileno()

    def send(self, message: Any) -> None:
        assert self.process.stdin is not None
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        os.write(self.process.stdin.fileno(), data)  # small: never fills the pipe

    def receive(self, deadline: float) -> Any:
        """The next JSON line, by ``deadline`` (monotonic); raises DeadlineExceeded."""
        poller = select.poll()
        poller.register(self.out, select.POLLIN | select.POLLHUP | select.POLLERR)
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded
            if not poller.poll(max(remaining * 1000, 1)):
                continue
            chunk = os.read(self.out, 1 << 16)
            if not chunk:
                raise WorkerError(f"worker exited (status {self.process.poll()})")
            self.buffer += chunk
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        return json.loads(line)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(Exception):
            self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()


class Pool:
    """``size`` workers of ``module``; see the module docstring."""

    def __init__(
        self,
        module: str,
        *,
        size: int = 2,
        deadline: float = 2.0,
        wait: float = 15.0,
        memory_bytes: int = 1 << 30,
        startup_timeout: float = 120.0,
    ) -> None:
        self.module = module
        self.size = size
        self.deadline = deadline
        self.wait = wait
        self.memory_bytes = memory_bytes
        self.startup_timeout = startup_timeout
        self.backstop = max(10.0, 5 * deadline)  # the worker's own alarm, if we cannot kill it
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._starting = 0
        self._closed = False
        self.killed = 0  # workers killed at a deadline (tests, metrics)
        self.started = 0

    # ---- calls -------------------------------------------------------------------------------

    def call(self, function: str, *args: Any, deadline: float | None = None) -> Any:
        """``module.function(*args)`` in a worker; raises DeadlineExceeded, PoolUnavailable or
        WorkerError."""
        worker = self._acquire(time.monotonic() + self.wait)
        try:
            worker.send([function, list(args)])
            status, payload = worker.receive(time.monotonic() + (deadline or self.deadline))
        except DeadlineExceeded:
            self._discard(worker, killed=True)
            raise
        except (OSError, ValueError, WorkerError) as exc:
            self._discard(worker)
            raise WorkerError(str(exc) or type(exc).__name__) from None
        except BaseException:
            self._discard(worker)  # interrupted mid-call: its answer would be read by the next
            raise
        if status == "error" and payload == "MemoryError":
            self._discard(worker)  # it exits after saying so
        else:
            self._release(worker)
        if status != "ok":
            raise WorkerError(payload)
        return payload

    def start(self) -> None:
        """Start the workers now (in the background), instead of at the first call."""
        with self._cond:
            self._fill()

    def ready(self, timeout: float) -> bool:
        """Wait until at least one worker is idle."""
        end = time.monotonic() + timeout
        with self._cond:
            self._fill()
            while not self._idle and not self._closed:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return bool(self._idle)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            workers = [*self._idle, *self._busy]
            self._idle.clear()
            self._cond.notify_all()
        for worker in workers:
            worker.kill()

    # ---- workers -----------------------------------------------------------------------------

    def _acquire(self, until: float) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise PoolUnavailable("the answer worker pool is closed")
                while self._idle:
                    worker = self._idle.pop()
                    if worker.process.poll() is None:
                        self._busy.add(worker)
                        return worker
                    worker.kill()  # died while idle (its alarm, an OOM kill)
                self._fill()
                remaining = until - time.monotonic()
                if remaining <= 0:
                    raise PoolUnavailable(f"no answer worker became free within {self.wait:g} s")
                self._cond.wait(remaining)

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            self._busy.discard(worker)
            if self._closed:
                worker.kill()
                return
            self._idle.append(worker)
            self._cond.notify()

    def _discard(self, worker: _Worker, killed: bool = False) -> None:
        worker.kill()
        with self._cond:
            self._busy.discard(worker)
            if killed:
                self.killed += 1
            self._fill()  # a replacement starts now, not at the next call
            self._cond.notify_all()

    def _fill(self) -> None:
        """Start workers up to ``size`` (caller holds the lock)."""
        if self._closed:
            return
        missing = self.size - len(self._idle) - len(self._busy) - self._starting
        for _ in range(max(missing, 0)):
            self._starting += 1
            threading.Thread(target=self._spawn, name="winnow-sandbox-start", daemon=True).start()

    def _spawn(self) -> None:
        worker = None
        try:
            worker = _start_worker(self.module, self.memory_bytes, self.backstop)
            status, _ = worker.receive(time.monotonic() + self.startup_timeout)
            if status != "ready":
                raise WorkerError(f"worker said {status!r}")
        except Exception as exc:
            log.error("an answer worker (%s) failed to start: %s", self.module, exc)
            if worker is not None:
                worker.kill()
            worker = None
            time.sleep(1.0)  # no hot loop of failing starts; the next call tries again
        with self._cond:
            self._starting -= 1
            if worker is not None:
                if self._closed:
                    worker.kill()
                else:
                    self.started += 1
                    self._idle.append(worker)
            self._cond.notify_all()


def _start_worker(module: str, memory_bytes: int, backstop: float) -> _Worker:
    root = str(Path(__file__).resolve().parents[2])  # above winnow/
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        [sys.executable, "-m", "winnow.answers.sandbox", module, str(memory_bytes), str(backstop)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,  # a terminal's Ctrl-C is the server's to handle, not the worker's
        close_fds=True,
    )
    return _Worker(process)


# ---- the worker side -----------------------------------------------------------------------------


def _serve(module_name: str, memory_bytes: int, backstop: float) -> None:
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        if memory_bytes > 0:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol
    module = importlib.import_module(module_name)
    warm = getattr(module, "warm", None)
    if callable(warm):
        warm()
    out.write(b'["ready",null]\n')
    out.flush()
    for line in sys.stdin.buffer:
        function, args = json.loads(line)
        signal.setitimer(signal.ITIMER_REAL, backstop)  # default action: terminate
        try:
            reply: list[Any] = ["ok", getattr(module, function)(*args)]
        except MemoryError:
            out.write(json.dumps(["error", "MemoryError"]).encode() + b"\n")
            out.flush()
            return  # a fresh worker is cheaper than trusting this one's heap
        except Exception as exc:
            reply = ["error", f"{type(exc).__name__}: {exc}"[:500]]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        out.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):  # the parent left first
        _serve(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))

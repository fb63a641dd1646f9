"""Issue 13 end to end on the fake engine, through a real uvicorn on 127.0.0.1: a hostile answer
or reference cannot stall the server, and SIGTERM ends it even with a thread wedged.

Before the fix, the first request below held the GIL in a big-integer power for minutes:
/health stopped answering and SIGTERM was ignored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.wedged_server import SHUTDOWN_TIMEOUT
from winnow.clients.launch import free_port
from winnow.engine.fake import FakeEngine, cycle_script
from winnow.rewards.fake import fake_rewards
from winnow.rewards.registry import RewardSet
from winnow.server.app import create_app
from winnow.server.background import BackgroundServer
from winnow.server.run import HARD_EXIT_GRACE
from winnow.settings import Settings

HOSTILE = "((10^{1000})^{1000})^{1000}"
ISSUE_REQUEST = {
    "reward": "verifier",
    "items": [
        {
            "messages": [{"role": "user", "content": "x"}],
            "response": "The answer is 5",
            "reference": HOSTILE,
        }
    ],
}
MODEL_TEXTS = [
    f"The answer is {HOSTILE}.",
    "The answer is 5.",
    "The answer is 1 + 4.",  # an echo of the question: no final answer (item 5)
    "\\boxed{\\sin((10^{1000})^{1000})}",
    "The answer is 5.",
    "\\boxed{(2^1000)^1000/(3^1000)^1000}",
    "The answer is (a+b+c+d)^4*(a+b+c+d+1)^4*(a+b+c+d+2)^4.",  # bounded: keyed unexpanded
    "The answer is \\sqrt{2}.",
]


class HealthWatch:
    """GET /health every 50 ms in a thread while in the block (after one answered check); the
    slowest answer (a missing one counts as 30 s) and how many were made."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.worst = 0.0
        self.checks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _check(self) -> float:
        started = time.perf_counter()
        try:
            ok = self.http.get("/health").status_code == 200
        except httpx.HTTPError:
            ok = False
        return time.perf_counter() - started if ok else 30.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.worst = max(self.worst, self._check())
            self.checks += 1
            self._stop.wait(0.05)

    def __enter__(self) -> HealthWatch:
        assert self._check() < 30  # connected
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # at least two checks, however fast the block was (a quiet machine answers the whole
        # flood of refusals within one 50 ms interval); bounded, a stalled server fails below
        deadline = time.monotonic() + 5
        while self.checks < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(timeout=60)
        self.http.close()


def _assert_openai_error(r: httpx.Response, *needles: str) -> dict:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    for needle in needles:
        assert needle in error["message"], error["message"]
    return error


def test_the_issue_request_gets_a_400_and_health_answers_within_a_second() -> None:
    engine = FakeEngine(cycle_script(MODEL_TEXTS))
    app = create_app(Settings(max_n=16), engine, RewardSet(fake_rewards()))
    with (
        BackgroundServer(app) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        with HealthWatch(server.base_url) as during:
            started = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:  # a flood of the issue's request
                sent = [
                    pool.submit(http.post, "/v1/rewards", json=ISSUE_REQUEST) for _ in range(24)
                ]
                for future in sent:
                    r = future.result()
                    _assert_openai_error(
                        r, "reference of item 0", "too large to evaluate", "digits"
                    )
            assert time.perf_counter() - started < 10
            # the same reference given to a strategy: refused before any sampling
            calls = len(engine.calls)
            r = http.post(
                "/v1/chat/completions",
                json={
                    "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": 20,
                    "strategy": {
                        "name": "best_of_n",
                        "n": 4,
                        "reward": "verifier",
                        "reference": HOSTILE,
                    },
                },
            )
            error = _assert_openai_error(r, "too large to evaluate")
            assert error["param"] == "strategy.reference"
            assert len(engine.calls) == calls
            # hostile final answers from the model: unparsed (no group), verifier 0, request 200
            r = http.post(
                "/v1/completions",
                json={
                    "prompt": "What is 1 + 4?",
                    "max_tokens": 200,
                    "n": 1,
                    "strategy": {
                        "name": "best_of_n",
                        "n": 8,
                        "reward": "verifier",
                        "reference": "5",
                        "return_candidates": True,
                    },
                },
            )
            assert r.status_code == 200, r.text
            candidates = r.json()["winnow"]["candidates"]
            by_text = {c["text"]: c for c in candidates}
            assert by_text["The answer is 5."]["score"] == 1.0
            assert by_text["The answer is 5."]["group"] is not None
            readable = ("The answer is 5.", "The answer is \\sqrt{2}.", MODEL_TEXTS[6])
            for text in MODEL_TEXTS:
                assert (by_text[text]["group"] is None) is (text not in readable), text
                if text not in readable:
                    assert by_text[text]["answer"] is None and by_text[text]["score"] == 0.0
            r = http.post(
                "/v1/completions",
                json={"prompt": "p", "max_tokens": 200, "n": 1,
                      "strategy": {"name": "best_of_majority", "n": 8, "reward": "default"}},
            )  # fmt: skip
            assert r.status_code == 200, r.text
        assert during.checks >= 2
        assert during.worst < 1.0, f"/health took {during.worst:.2f} s during the requests"
        with HealthWatch(server.base_url) as after:
            time.sleep(1.0)
        assert after.checks >= 2 and after.worst < 1.0


def test_a_hostile_response_scores_zero_without_stalling() -> None:
    app = create_app(Settings(), FakeEngine(), RewardSet(fake_rewards()))
    items = [
        {"prompt": "q", "response": f"The answer is {text}", "reference": "5"}
        for text in ("5", HOSTILE, "1 + 4", "\\tan(10^{400})", "10^{10^{10}}", "\\frac{10}{2}")
    ]
    with (
        BackgroundServer(app) as server,
        httpx.Client(base_url=server.base_url, timeout=60) as http,
    ):
        with HealthWatch(server.base_url) as during:
            r = http.post("/v1/rewards", json={"reward": "verifier", "items": items})
        assert r.status_code == 200, r.text
        assert [d["score"] for d in r.json()["data"]] == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
        assert during.worst < 1.0


# ---- SIGTERM with a wedged thread ----------------------------------------------------------------


def _start_wedged(mode: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = tmp_path / f"server-{mode}.log"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.wedged_server", str(port), mode],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=root,
        env=env,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return process, base_url, log
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("the server did not start: " + log.read_text())


@pytest.mark.parametrize(
    ("mode", "sig"),
    [("shutdown", signal.SIGTERM), ("thread", signal.SIGTERM), ("thread", signal.SIGINT)],
)
def test_a_signal_ends_the_server_in_time_even_with_a_wedged_thread(mode, sig, tmp_path) -> None:
    process, base_url, log = _start_wedged(mode, tmp_path)
    try:
        result: dict[str, httpx.Response] = {}

        def wedge() -> None:
            result["r"] = httpx.post(
                f"{base_url}/v1/rewards",
                json={"reward": "wedged", "items": [{"prompt": "x", "response": "y"}]},
                timeout=60,
            )

        caller = threading.Thread(target=wedge, daemon=True)
        caller.start()
        time.sleep(1.0)  # the call is in its wedged thread now
        assert httpx.get(f"{base_url}/health", timeout=5).status_code == 200
        started = time.monotonic()
        process.send_signal(sig)
        try:
            process.wait(timeout=SHUTDOWN_TIMEOUT + HARD_EXIT_GRACE + 10)
        except subprocess.TimeoutExpired:
            pytest.fail("the server ignored the signal: " + log.read_text()[-2000:])
        took = time.monotonic() - started
        assert took < SHUTDOWN_TIMEOUT + HARD_EXIT_GRACE + 3, took
        caller.join(timeout=10)
        assert result["r"].status_code == 503  # aborted at the drain deadline, not left hanging
        assert result["r"].json()["error"]["code"] == "shutting_down"
        if process.returncode == 1:  # the watchdog: it says what was stuck
            assert "Timeout" in log.read_text() and "wedged" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

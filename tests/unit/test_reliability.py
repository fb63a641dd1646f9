"""Caps, faults, slow clients and graceful shutdown, on the fake engine with fake rewards.

Every strategy registered is covered by the budget tests (they iterate strategies.names()).
Timings are bounds far from the values they guard (a hung call would take forever, a dead engine
request 30 s), so the tests are deterministic on a loaded machine.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.fakes import placeholder_value_models
from winnow import strategies
from winnow.engine.base import EngineUnavailable, Generation, SamplingSpec
from winnow.engine.fake import FakeEngine, cycle_script
from winnow.metering.engine import MeteredEngine
from winnow.metering.usage import TokenBudgetExceeded, UsageMeter
from winnow.rewards.fake import HANG, RAISE, FakeReward, fake_rewards
from winnow.rewards.registry import RewardSet
from winnow.server.app import create_app
from winnow.server.background import BackgroundServer
from winnow.settings import Settings


@pytest.fixture(autouse=True)
def _value_models(monkeypatch, tmp_path):
    placeholder_value_models(monkeypatch, tmp_path / "values")


BEST_OF_4 = {"name": "best_of_n", "n": 4}


def make_client(engine=None, rewards=None, **settings) -> TestClient:
    reward_set = RewardSet(rewards if rewards is not None else fake_rewards())
    return TestClient(create_app(Settings(**settings), engine or FakeEngine(), reward_set))


def complete(client, prompt: str = "q", strategy=None, **extra):
    body = {"prompt": prompt, "max_tokens": 40, **extra}
    if strategy is not None:
        body["strategy"] = strategy
    return client.post("/v1/completions", json=body)


# ---- the per-request token budget ---------------------------------------------------------------

BUDGET = re.compile(r"may generate up to (\d+) tokens")
# parameters a strategy cannot run without on fake rewards (no calibrated default there)
REQUIRED: dict[str, dict] = {"cards": {"r_star": 0.5}}


def smallest(name: str) -> dict:
    return {"name": name, **REQUIRED.get(name, {})}


@pytest.mark.parametrize("name", strategies.names())
def test_token_budget_cap_for_every_strategy(name):
    """Past the cap: 400 naming the budget and the cap, before any engine call. At the cap: the
    request runs, and never generates more than the budget it declared (held at run time)."""
    engine = FakeEngine(cycle_script(["Step one.\n\nThe answer is 4. " * 3]))
    with make_client(engine, max_request_tokens=1) as c:
        r = complete(c, strategy=smallest(name))
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "token_budget_exceeded"
        assert "--max-request-tokens" in error["message"]
        assert "cap is 1 tokens" in error["message"]
        budget = int(BUDGET.search(error["message"]).group(1))
        assert budget >= 1
        assert engine.calls == []
    with make_client(engine, max_request_tokens=budget) as c:
        r = complete(c, strategy=smallest(name))
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["winnow"]["generated_tokens"] <= budget
        assert engine._running == 0


def test_budget_counts_every_prompt_of_a_request():
    with make_client(max_request_tokens=100) as c:
        assert complete(c, prompt=["a", "b"], max_tokens=50).status_code == 200
        r = complete(c, prompt=["a", "b", "c"], max_tokens=50)
        assert r.status_code == 400
        assert "up to 150 tokens for this request (3 prompts)" in r.json()["error"]["message"]


def test_metered_engine_stops_a_strategy_past_its_budget():
    async def main() -> None:
        engine = FakeEngine(cycle_script(["x" * 50]))
        metered = MeteredEngine(engine, UsageMeter(token_limit=10))
        with pytest.raises(TokenBudgetExceeded, match="past its token budget of 10"):
            await metered.generate(SamplingSpec(prompt="p", max_tokens=20))
        metered = MeteredEngine(engine, UsageMeter(token_limit=10))
        received = 0
        with pytest.raises(TokenBudgetExceeded):
            async for event in metered.stream(SamplingSpec(prompt="p", max_tokens=40)):
                received += len(event.deltas)
        assert received == 10  # the 11th token is never handed to the strategy
        assert engine.aborted == 1  # the engine stream was closed: its work aborted
        assert engine._running == 0

    asyncio.run(main())


# ---- reward faults ------------------------------------------------------------------------------


def _concurrently(*calls):
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result(timeout=60) for f in futures]


def test_reward_that_raises_fails_only_its_request():
    with make_client(FakeEngine(delay=0.05)) as c:
        bad, *good = _concurrently(
            lambda: complete(c, f"q {RAISE}", BEST_OF_4),
            *[lambda i=i: complete(c, f"q{i}", BEST_OF_4) for i in range(3)],
        )
        assert bad.status_code == 500
        error = bad.json()["error"]
        assert error["code"] == "reward_error"
        assert "reward 'default' failed" in error["message"]
        assert [r.status_code for r in good] == [200, 200, 200]
        # streamed: the error arrives in-band with the same status and code
        body = {"prompt": f"q {RAISE}", "max_tokens": 20, "strategy": BEST_OF_4, "stream": True}
        with c.stream("POST", "/v1/completions", json=body) as s:
            lines = [line for line in s.iter_lines() if line.startswith("data: ")]
        assert '"code":"reward_error"' in lines[0]
        assert lines[-1] == "data: [DONE]"


@pytest.mark.parametrize("batched", [False, True], ids=["in-loop", "batcher-thread"])
def test_reward_that_hangs_times_out_and_others_go_on(batched):
    reward = FakeReward("default", batched=batched)
    rewards = {**fake_rewards(), "default": reward}
    try:
        with make_client(FakeEngine(), rewards, reward_timeout=0.5) as c:
            started = time.monotonic()

            def hung():
                return complete(c, f"q {HANG}", BEST_OF_4), time.monotonic() - started

            def healthy():
                time.sleep(0.1)  # arrives while the hung call is pending (in the same batcher)
                return complete(c, "fine", BEST_OF_4), time.monotonic() - started

            (bad, bad_at), (good, good_at) = _concurrently(hung, healthy)
            assert bad.status_code == 504, bad.text
            assert bad.json()["error"]["code"] == "reward_timeout"
            assert "--reward-timeout" in bad.json()["error"]["message"]
            assert bad_at < 10  # a hang, bounded
            assert good.status_code == 200, good.text
            assert good_at < 10
            # and the reward keeps serving afterwards (the batcher was not left stuck)
            assert complete(c, "again", BEST_OF_4).status_code == 200
            r = c.post("/v1/rewards", json={"reward": "default", "items": [
                {"prompt": f"x {HANG}", "response": "y"}]})  # fmt: skip
            assert r.status_code == 504
    finally:
        reward.release()


# ---- a dead engine ------------------------------------------------------------------------------


class DyingEngine(FakeEngine):
    """A fake engine that can die while requests run: they fail at once, as vLLM's
    EngineDeadError makes them fail, instead of waiting for output that never comes."""

    async def generate(self, spec: SamplingSpec) -> Generation:
        task = asyncio.ensure_future(super().generate(spec))
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.02)
                if not self.healthy and not task.done():
                    task.cancel()
                    raise EngineUnavailable("engine died")
            return task.result()
        finally:
            if not task.done():
                task.cancel()

    def die(self) -> None:
        self.healthy = False


def test_dead_engine_fails_health_and_requests_with_503_without_hanging():
    engine = DyingEngine(delay=30.0)
    with make_client(engine, request_timeout=120) as c:
        assert c.get("/health").status_code == 200
        with ThreadPoolExecutor(2) as pool:
            started = time.monotonic()
            running = [pool.submit(complete, c, f"p{i}", BEST_OF_4) for i in range(2)]
            time.sleep(0.5)
            engine.die()
            responses = [f.result(timeout=20) for f in running]
        assert time.monotonic() - started < 15  # not the 30 s the engine would have taken
        for r in responses:
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "engine_unavailable"
        assert c.get("/health").status_code == 503
        assert complete(c).status_code == 503
        assert engine._running == 0
        # even with every running place and queue place taken, a dead engine is a 503, not 429
        c.app.app.state.winnow.admission.running = 10**6
        c.app.app.state.winnow.admission.queued = 10**6
        r = complete(c)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "engine_unavailable"
        c.app.app.state.winnow.admission.running = 0
        c.app.app.state.winnow.admission.queued = 0
        engine.healthy, engine.delay = True, 0.0  # it came back: admitted again
        assert complete(c, max_tokens=3).status_code == 200


# ---- slow clients -------------------------------------------------------------------------------

LONG = "word " * 4000  # 20,000 one-character tokens: far more SSE than socket buffers hold


def _stalled_stream(base_url: str, key: str | None = None) -> socket.socket:
    """Open a streaming request and never read its body (a tiny receive buffer)."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    body = b'{"prompt":"slow","max_tokens":20000,"stream":true}'
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def _wait(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_slow_client_blocks_no_one_and_its_work_is_aborted_when_it_leaves():
    engine = FakeEngine(cycle_script([LONG]), delay=2.0, max_model_len=65536)
    app = create_app(Settings(request_timeout=120), engine, RewardSet(fake_rewards()))
    with BackgroundServer(app) as server:
        sock = _stalled_stream(server.base_url)
        try:
            assert _wait(lambda: engine._running >= 1, timeout=30)
            time.sleep(1.0)  # let its buffers fill
            with httpx.Client(base_url=server.base_url, timeout=30) as http:
                for strategy in ("sample", BEST_OF_4):
                    started = time.monotonic()
                    r = http.post(
                        "/v1/completions",
                        json={"prompt": "other", "max_tokens": 5, "strategy": strategy},
                    )
                    assert r.status_code == 200, r.text
                    assert time.monotonic() - started < 10
            assert engine._running >= 1  # the stalled stream still holds its engine request
            aborted = engine.aborted
        finally:
            sock.close()
        assert _wait(lambda: engine._running == 0, timeout=30)
        assert engine.aborted == aborted + 1


def test_client_that_stops_reading_is_cut_off_at_the_wall_time():
    engine = FakeEngine(cycle_script([LONG]), delay=0.5, max_model_len=65536)
    app = create_app(Settings(request_timeout=1.0), engine, RewardSet(fake_rewards()))
    with BackgroundServer(app) as server:
        sock = _stalled_stream(server.base_url)
        try:
            assert _wait(lambda: engine._running >= 1, timeout=30)
            # the in-band 504 cannot be sent to a client that does not read; the backstop
            # (wall time + 5 s) ends the response and aborts the engine work anyway
            assert _wait(lambda: engine._running == 0, timeout=40)
            assert engine.aborted >= 1
            assert server.state.admission.running == 0
        finally:
            sock.close()


# ---- graceful shutdown --------------------------------------------------------------------------


def test_shutdown_drains_in_flight_requests_and_refuses_new_ones():
    engine = FakeEngine(delay=0.5)  # a request takes about 1 s
    app = create_app(Settings(shutdown_timeout=10), engine, RewardSet(fake_rewards()))
    server = BackgroundServer(app).start()
    with ThreadPoolExecutor(4) as pool, httpx.Client(base_url=server.base_url) as http:
        running = [
            pool.submit(http.post, "/v1/completions", json={"prompt": f"p{i}", "max_tokens": 5})
            for i in range(3)
        ]
        assert _wait(lambda: server.state.admission.running == 3)
        server.state.drain.begin()  # what SIGTERM does first; new requests now get 503
        r = http.post("/v1/completions", json={"prompt": "late", "max_tokens": 5})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "shutting_down"
        server.terminate()
        assert [f.result(timeout=20).status_code for f in running] == [200, 200, 200]
    assert server.join(timeout=20)
    assert engine.aborted == 0
    assert engine._running == 0


@pytest.mark.parametrize("stream", [False, True])
def test_shutdown_aborts_what_outlives_the_deadline(stream):
    engine = FakeEngine(delay=30.0)
    app = create_app(Settings(shutdown_timeout=0.5), engine, RewardSet(fake_rewards()))
    server = BackgroundServer(app).start()
    body = {"prompt": "slow", "max_tokens": 5, "stream": stream, "strategy": "sample"}
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=server.base_url, timeout=60) as http:
        pending = pool.submit(http.post, "/v1/completions", json=body)
        assert _wait(lambda: engine._running == 1)
        started = time.monotonic()
        server.terminate()
        r = pending.result(timeout=30)
        assert time.monotonic() - started < 15  # not the 30 s the engine would take
    if stream:
        assert r.status_code == 200  # the stream had begun: the 503 comes in-band
        assert '"code":"shutting_down"' in r.text
        assert r.text.rstrip().endswith("data: [DONE]")
    else:
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "shutting_down"
    assert server.join(timeout=20)
    assert engine.aborted == 1
    assert engine._running == 0


def test_reliability_flags_reach_the_settings():
    from winnow.cli import build_parser, serve_settings

    argv = [
        "serve",
        "--max-request-tokens",
        "500",
        "--reward-timeout",
        "3",
        "--shutdown-timeout",
        "7",
    ]
    args, extra = build_parser().parse_known_args(argv)
    settings = serve_settings(args, extra)
    assert (settings.max_request_tokens, settings.reward_timeout, settings.shutdown_timeout) == (
        500,
        3.0,
        7.0,
    )


def test_client_that_leaves_the_queue_frees_its_place():
    engine = FakeEngine(delay=1.5)  # a request takes about 3 s
    settings = Settings(max_running_requests=1, max_queued_requests=1)
    app = create_app(settings, engine, RewardSet(fake_rewards()))
    body = {"prompt": "p", "max_tokens": 5}
    with BackgroundServer(app) as server, ThreadPoolExecutor(2) as pool:
        admission = server.state.admission
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            first = pool.submit(http.post, "/v1/completions", json=body)
            assert _wait(lambda: admission.running == 1)
            with pytest.raises(httpx.ReadTimeout):  # queued behind it, gives up after 0.5 s
                http.post("/v1/completions", json=body, timeout=0.5)
            assert _wait(lambda: admission.queued == 0, timeout=2)  # left the queue at once
            assert not first.done()
            # so the queue place is free for the next client (not a 429)
            assert http.post("/v1/completions", json=body).status_code == 200
            assert first.result().status_code == 200
        assert engine.calls and len(engine.calls) == 2  # the leaver never reached the engine

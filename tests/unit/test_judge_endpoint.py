"""The judge at another OpenAI-compatible endpoint, against a small fake server on loopback: the
request it sends, the key it reads from the environment, its own concurrency limit, and the
scores it reads from the first token's log-probabilities."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pydantic
import pytest

from winnow.rewards.base import ChatPrompt, OutcomeItem, RewardError
from winnow.rewards.configs import JudgeConfig, RewardConfigError, RewardConfigList
from winnow.rewards.judge import DEFAULT_TEMPLATE
from winnow.rewards.registry import build_rewards

KEY = "sk-judge-test"
TOP = [(" Yes", math.log(0.6)), (" No", math.log(0.2)), ("yes", math.log(0.1)), ("Maybe", -3.0)]


class FakeOpenAI:
    """``POST /v1/chat/completions`` answering one token with fixed top logprobs."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, Any], str | None]] = []
        self.in_flight = self.peak = 0
        self.status = 200
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # http.server calls it by this name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append((body, self.headers.get("Authorization")))
                    fake.in_flight += 1
                    fake.peak = max(fake.peak, fake.in_flight)
                time.sleep(0.05)
                with fake.lock:
                    fake.in_flight -= 1
                ok = self.path == "/v1/chat/completions" and fake.status == 200
                top = [{"token": t, "logprob": lp, "bytes": None} for t, lp in TOP]
                answer = {
                    "id": "x",
                    "object": "chat.completion",
                    "model": body.get("model"),
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": " Yes"},
                        "logprobs": {"content": [{**top[0], "top_logprobs": top}]},
                        "finish_reason": "length",
                    }],
                    "usage": {"prompt_tokens": 42, "completion_tokens": 1, "total_tokens": 43},
                }  # fmt: skip
                data = json.dumps(answer if ok else {"error": "boom"}).encode()
                self.send_response(200 if ok else fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def judge(fake: FakeOpenAI, **options: Any) -> Any:
    config = {"name": "big_judge", "backend": "judge", "base_url": fake.url, "model": "judge-70b"}
    rewards = build_rewards(
        RewardConfigList.validate_python([{**config, **options}]), default_model_dir=None
    )
    return rewards.get("big_judge")


def test_the_judge_asks_another_endpoint(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("JUDGE_KEY", KEY)
    reward = judge(fake, api_key_env="JUDGE_KEY", max_concurrency=2)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}]
    items = [OutcomeItem(ChatPrompt("<policy text>", messages), f"answer {i}") for i in range(6)]

    async def score() -> Any:
        try:
            return await reward.score(items)
        finally:
            await reward.shutdown()

    scored = asyncio.run(score())
    assert scored.scores == pytest.approx([0.7 / 0.9] * 6)  # (0.6 + 0.1) / (0.6 + 0.1 + 0.2)
    assert scored.tokens == 6 * 42
    assert fake.peak == 2  # its own limit: never more than 2 verdicts in flight
    contents = set()
    for body, auth in fake.requests:
        assert auth == f"Bearer {KEY}"
        assert body["model"] == "judge-70b" and body["max_tokens"] == 1
        assert body["logprobs"] is True and body["top_logprobs"] == 20
        assert body["temperature"] == 0
        contents.add(body["messages"][0]["content"])
    want = {DEFAULT_TEMPLATE.format(question="2 + 2?", answer=f"answer {i}") for i in range(6)}
    assert contents == want
    assert KEY not in json.dumps(reward.info.extra) and reward.info.extra["model"] == "judge-70b"


def test_endpoint_errors_and_settings(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch):
    fake.status = 503
    reward = judge(fake)
    with pytest.raises(RewardError, match="503"):
        asyncio.run(reward.score([OutcomeItem("q", "a")]))
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    with pytest.raises(RewardConfigError, match="NO_SUCH_JUDGE_KEY"):
        judge(fake, api_key_env="NO_SUCH_JUDGE_KEY")
    for bad in ({"base_url": "http://x/v1"}, {"model": "m"}, {"base_url": "ftp://x", "model": "m"},
                {"base_url": "http://x/v1", "model": "m", "max_concurrency": 0}):  # fmt: skip
        with pytest.raises(pydantic.ValidationError):
            JudgeConfig(name="j", **bad)

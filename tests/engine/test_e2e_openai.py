"""End to end: the official `openai` SDK against winnow on 127.0.0.1 over the real engine."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def client(live_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.base_url, api_key=live_server.api_key, max_retries=0)


def test_models_lists_the_default_model(client):
    (model,) = client.models.list().data
    assert model.id == "SmolLM2-135M-Instruct"


def test_chat_answers_with_the_real_model(client):
    r = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
    )
    assert "Paris" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 10
    assert r.usage.completion_tokens == r.usage.model_extra["winnow"]["generated_tokens"]


def test_completion_n_with_strategy_in_extra_body(client):
    r = client.completions.create(
        model="SmolLM2-135M-Instruct",
        prompt="The three primary colours are",
        n=3,
        max_tokens=8,
        temperature=0.8,
        seed=11,
        extra_body={"strategy": {"name": "sample"}, "top_k": 40},
    )
    assert len(r.choices) == 3
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    usage = r.usage
    extension = usage.model_extra["winnow"]
    assert extension["engine_calls"] == 1  # n samples are one engine request
    assert usage.completion_tokens == extension["generated_tokens"]  # plain sampling keeps all
    assert extension["discarded_tokens"] == 0
    assert 0 < usage.prompt_tokens < 12  # counted once, not three times


def test_streaming_chat_with_usage(client):
    stream = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    text = "".join(pieces)
    assert len(pieces) > 3  # real token-by-token streaming, not one chunk
    assert text.strip()
    assert finish in {"stop", "length"}
    assert usage is not None and usage.completion_tokens >= len(pieces) - 1
    whole = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=20,
        temperature=0,
    )
    assert whole.choices[0].message.content == text


def test_sdk_sees_openai_errors(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(
            model="SmolLM2-135M-Instruct",
            prompt="x",
            max_tokens=8,
            extra_body={"strategy": {"name": "no_such_strategy"}},
        )
    assert err.value.body["param"] == "strategy.name"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="SmolLM2-135M-Instruct", prompt="x", max_tokens=100_000)
    assert err.value.body["code"] == "context_length_exceeded"


def test_wrong_key_is_401(live_server):
    bad = openai.OpenAI(base_url=live_server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def _metric(live_server, name: str) -> float:
    text = httpx.get(live_server.base_url.removesuffix("/v1") + "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_client_disconnect_mid_stream_aborts_engine_work(live_server):
    payload = {
        "model": "SmolLM2-135M-Instruct",
        "prompt": "Once upon a time",
        "max_tokens": 3000,
        "ignore_eos": True,
        "n": 2,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {live_server.api_key}"}
    with (
        httpx.Client(timeout=60) as http,
        http.stream(
            "POST", live_server.base_url + "/completions", json=payload, headers=headers
        ) as r,
    ):
        assert r.status_code == 200
        for i, line in enumerate(r.iter_lines()):
            if line.startswith("data: "):
                json.loads(line[6:])
            if i > 6:
                break
    assert live_server.wait_idle() == 0
    assert _metric(live_server, "winnow_engine_running_requests") == 0


def test_client_disconnect_without_stream_aborts_engine_work(live_server):
    payload = {
        "model": "SmolLM2-135M-Instruct",
        "prompt": "Once upon a time",
        "max_tokens": 3000,
        "ignore_eos": True,
        "n": 2,
    }
    headers = {"Authorization": f"Bearer {live_server.api_key}"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(live_server.base_url + "/completions", json=payload, headers=headers, timeout=2)
    time.sleep(0.5)
    assert live_server.wait_idle() == 0


def test_health(live_server):
    r = httpx.get(live_server.base_url.removesuffix("/v1") + "/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}

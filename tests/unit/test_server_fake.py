"""The server on the scripted fake engine: protocol, validation, errors, usage, streaming."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from winnow.engine.fake import FakeEngine, cycle_script
from winnow.server.app import create_app
from winnow.settings import Settings


def make_client(engine: FakeEngine | None = None, **settings) -> TestClient:
    app = create_app(Settings(**settings), engine or FakeEngine())
    return TestClient(app)


@pytest.fixture
def client():
    with make_client() as c:
        yield c


def test_completion_returns_text_and_usage(client):
    r = client.post("/v1/completions", json={"prompt": "hello", "max_tokens": 50})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["model"] == "fake-model"
    (choice,) = body["choices"]
    assert choice["text"] == "answer 0 to: hello"
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == 5
    # 18 characters + the EOS token, as vLLM counts it
    assert usage["completion_tokens"] == 19
    assert usage["total_tokens"] == 24
    assert usage["winnow"]["generated_tokens"] == 19
    assert usage["winnow"]["discarded_tokens"] == 0
    assert usage["winnow"]["engine_calls"] == 1
    assert usage["winnow"]["strategy"] == "sample"


def test_max_tokens_truncates_with_length_reason(client):
    r = client.post("/v1/completions", json={"prompt": "hello", "max_tokens": 3})
    (choice,) = r.json()["choices"]
    assert choice["text"] == "ans"
    assert choice["finish_reason"] == "length"


def test_n_and_batched_prompts_index_choices(client):
    r = client.post("/v1/completions", json={"prompt": ["a", "b"], "n": 2, "max_tokens": 40})
    assert r.status_code == 200, r.text
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    assert choices[2]["text"] == "answer 0 to: b"
    assert r.json()["usage"]["prompt_tokens"] == 2


def test_chat_renders_template_and_answers(client):
    r = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    msg = body["choices"][0]["message"]
    assert msg["role"] == "assistant"
    assert msg["content"].endswith("<user>hi<assistant>")


def test_stop_strings(client):
    r = client.post("/v1/completions", json={"prompt": "x", "stop": [" to"], "max_tokens": 50})
    (choice,) = r.json()["choices"]
    assert choice["text"] == "answer 0"
    assert choice["finish_reason"] == "stop"


def test_echo_prepends_prompt(client):
    r = client.post("/v1/completions", json={"prompt": "x", "echo": True, "max_tokens": 3})
    assert r.json()["choices"][0]["text"] == "xans"


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        ({"prompt": "x", "n": 0}, 400, "n"),
        ({"prompt": "x", "n": 1000}, 400, "n"),
        ({"prompt": "x", "max_tokens": 5000}, 400, "max_tokens"),
        ({"prompt": "x", "temperature": "hot"}, 400, "temperature"),
        ({"prompt": "x", "strategy": {"name": "nope"}}, 400, "strategy.name"),
        ({"prompt": "x", "strategy": {"name": "sample", "beams": 4}}, 400, "strategy.beams"),
        ({"prompt": "x", "model": "other"}, 404, "model"),
        ({"prompt": "x", "best_of": 4}, 400, "best_of"),
        ({"prompt": "x", "n": 2, "temperature": 0}, 400, "n"),
        ({}, 400, "prompt"),
        ({"prompt": []}, 400, "prompt"),
    ],
)
def test_bad_input_gets_openai_error(client, payload, status, param):
    r = client.post("/v1/completions", json=payload)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert "Traceback" not in error["message"]
    # and the server keeps serving
    assert client.post("/v1/completions", json={"prompt": "ok"}).status_code == 200


def test_unknown_strategy_lists_accepted(client):
    r = client.post("/v1/completions", json={"prompt": "x", "strategy": "nope"})
    assert "sample" in r.json()["error"]["message"]


def test_invalid_json_is_400(client):
    r = client.post(
        "/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_oversized_body_is_413():
    with make_client(max_body_bytes=2048) as c:
        r = c.post("/v1/completions", json={"prompt": "x" * 5000})
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "body_too_large"
        assert c.post("/v1/completions", json={"prompt": "x"}).status_code == 200


def test_prompt_past_context_is_400():
    with make_client(FakeEngine(max_model_len=32)) as c:
        r = c.post("/v1/completions", json={"prompt": "y" * 40})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "context_length_exceeded"


def test_api_key_required_when_set():
    with make_client(api_key="s3cret") as c:
        assert c.post("/v1/completions", json={"prompt": "x"}).status_code == 401
        bad = {"Authorization": "Bearer wrong"}
        assert c.post("/v1/completions", json={"prompt": "x"}, headers=bad).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert c.post("/v1/completions", json={"prompt": "x"}, headers=good).status_code == 200
        assert c.get("/v1/models").status_code == 401
        assert c.get("/health").status_code == 200  # probes need no key


def test_models_and_strategies_listed(client):
    models = client.get("/v1/models").json()
    assert models["data"][0]["id"] == "fake-model"
    strategies = client.get("/v1/strategies").json()["data"]
    assert "sample" in {s["name"] for s in strategies}


def test_unhealthy_engine_gives_503():
    engine = FakeEngine()
    with make_client(engine) as c:
        engine.healthy = False
        assert c.get("/health").status_code == 503
        r = c.post("/v1/completions", json={"prompt": "x"})
        assert r.status_code == 503
        assert r.json()["error"]["type"] == "service_unavailable_error"


def _events(response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_streaming_completion_with_usage(client):
    payload = {
        "prompt": "hey",
        "max_tokens": 50,
        "n": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/completions", json=payload) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _events(r)
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    texts = {0: "", 1: ""}
    finishes = {}
    for e in events[:-2]:
        for ch in e["choices"]:
            texts[ch["index"]] += ch["text"]
            if ch.get("finish_reason"):
                finishes[ch["index"]] = ch["finish_reason"]
    assert texts == {0: "answer 0 to: hey", 1: "answer 1 to: hey"}
    assert finishes == {0: "stop", 1: "stop"}
    assert usage_chunk["usage"]["completion_tokens"] == 2 * 17
    assert usage_chunk["usage"]["winnow"]["generated_tokens"] == 2 * 17


def test_streaming_chat_sends_role_first(client):
    payload = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 5}
    with client.stream("POST", "/v1/chat/completions", json=payload) as r:
        events = _events(r)
    first = events[0]["choices"][0]
    assert first["delta"]["role"] == "assistant"
    assert all("role" not in e["choices"][0]["delta"] for e in events[1:-1])
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "answe"
    assert events[-1] == "[DONE]"


def test_logprobs_shapes(client):
    r = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 3, "logprobs": 1})
    lp = r.json()["choices"][0]["logprobs"]
    assert lp["tokens"] == ["a", "n", "s"]
    assert lp["text_offset"] == [0, 1, 2]
    r = client.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 2,
            "logprobs": True,
            "top_logprobs": 1,
        },
    )
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert [c["token"] for c in content] == ["a", "n"]
    assert content[0]["top_logprobs"][0]["token"] == "a"


def test_metrics_count_requests_and_tokens(client):
    client.post("/v1/completions", json={"prompt": "hello", "max_tokens": 3})
    client.post("/v1/completions", json={"prompt": "x", "n": 0})
    text = client.get("/metrics").text
    assert (
        'winnow_requests_total{endpoint="completions",status="200",strategy="sample"} 1.0' in text
    )
    assert 'status="400"' in text
    assert 'winnow_tokens_total{kind="generated",strategy="sample"} 3.0' in text
    assert "winnow_engine_running_requests 0.0" in text


def test_script_cycles_for_deterministic_candidates():
    engine = FakeEngine(cycle_script(["one", "two"]))
    with make_client(engine) as c:
        r = c.post("/v1/completions", json={"prompt": "x", "n": 3, "max_tokens": 10})
        assert [ch["text"] for ch in r.json()["choices"]] == ["one", "two", "one"]


def test_overload_gets_429_with_retry_after_and_nothing_leaks():
    from concurrent.futures import ThreadPoolExecutor

    engine = FakeEngine(delay=0.5)
    with make_client(engine, max_running_requests=1, max_queued_requests=1) as c:

        def post(i: int):
            return c.post("/v1/completions", json={"prompt": f"p{i}", "max_tokens": 5})

        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(post, range(4)))
        codes = sorted(r.status_code for r in responses)
        assert codes.count(200) >= 2  # one ran, one waited its turn
        rejected = [r for r in responses if r.status_code == 429]
        assert rejected, codes
        assert rejected[0].headers["retry-after"] == "1"
        assert rejected[0].json()["error"]["type"] == "rate_limit_error"
        # capacity comes back once the storm is over
        assert post(9).status_code == 200
        state = c.app.app.state.winnow  # BodyLimit wraps the FastAPI app
        assert state.admission.running == 0
        assert state.admission.queued == 0
        assert engine._running == 0


def test_request_past_its_wall_time_is_504_and_aborts_engine_work():
    engine = FakeEngine(delay=5.0)
    with make_client(engine, request_timeout=0.3) as c:
        r = c.post("/v1/completions", json={"prompt": "x", "max_tokens": 5})
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "timeout"
        assert engine.aborted == 1
        assert engine._running == 0
        payload = {"prompt": "x", "max_tokens": 5, "stream": True}
        with c.stream("POST", "/v1/completions", json=payload) as s:
            events = _events(s)
        assert events[0]["error"]["code"] == "timeout"  # in-band: the stream had begun
        assert events[-1] == "[DONE]"
        assert engine._running == 0


def test_stop_token_ids_outside_the_vocabulary_are_400(client):
    for ids in ([2**40], [-1], [2**31]):  # the fake does not say its vocabulary: int32 bound
        r = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "stop_token_ids": ids},
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "stop_token_ids"
    r = client.post("/v1/completions", json={"prompt": "hi", "stop_token_ids": [2**31 - 1]})
    assert r.status_code == 200

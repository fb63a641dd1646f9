"""The typed client (unit): wire helpers, then the FakeEngine app (the real engine:
tests/engine/test_client.py)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from tests.support.serving import LiveServer
from winnow.clients import (
    AsyncWinnowClient,
    ChatCompletionChunk,
    CompletionChunk,
    Strategy,
    WinnowAPIError,
    WinnowClient,
    WinnowConnectionError,
)
from winnow.clients.errors import api_error, stream_error
from winnow.clients.launch import free_port
from winnow.clients.wire import iter_events, request_body, root_url

# ---- unit: strategy, bodies, errors, SSE -----------------------------------------------------


def test_strategy_forms_share_one_wire_object():
    typed = Strategy(name="best_of_n", params={"n": 8, "reward": "default"})
    assert typed.wire() == {"name": "best_of_n", "n": 8, "reward": "default"}
    assert Strategy.model_validate({"name": "best_of_n", "n": 8, "reward": "default"}) == typed
    assert Strategy.model_validate("sample").wire() == {"name": "sample"}
    with pytest.raises(ValidationError):
        Strategy(name="")


def test_request_body_drops_none_and_merges_extra_last():
    body = request_body(
        {"prompt": "x", "max_tokens": 8, "temperature": None},
        strategy="sample",
        stream=True,
        extra_body={"max_tokens": 4, "top_k": 5},
    )
    assert body == {
        "prompt": "x",
        "max_tokens": 4,
        "top_k": 5,
        "strategy": {"name": "sample"},
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert "stream_options" not in request_body({}, stream=True, include_usage=False)


def test_api_error_parses_openai_and_vllm_bodies():
    e = api_error(400, b'{"error": {"message": "bad n", "type": "invalid_request_error",'
                       b' "param": "n", "code": "invalid_value"}}')  # fmt: skip
    assert (e.status, e.message, e.type, e.param, e.code) == (
        400, "bad n", "invalid_request_error", "n", "invalid_value"
    )  # fmt: skip
    flat = api_error(404, '{"object": "error", "message": "no model", "type": "NotFound",'
                          ' "param": null, "code": 404}')  # fmt: skip
    assert (flat.status, flat.message, flat.code) == (404, "no model", 404)
    text = api_error(502, b"Bad Gateway")
    assert (text.status, text.message, text.type) == (502, "Bad Gateway", None)


def test_stream_events_skip_comments_stop_at_done_and_raise_errors():
    lines = [": ping", "", 'data: {"a": 1}', "event: x", "data: [DONE]", 'data: {"a": 2}']
    assert list(iter_events(lines)) == [{"a": 1}]
    error = {"error": {"message": "too slow", "type": "timeout_error", "param": None, "code": "t"}}
    assert stream_error(error).status == 504
    with pytest.raises(WinnowAPIError) as info:
        list(iter_events(['data: {"error": {"message": "boom", "type": "server_error"}}']))
    assert info.value.status == 500 and info.value.message == "boom"


def test_root_url_strips_v1():
    assert root_url("http://h:1/v1/") == "http://h:1"
    assert root_url("http://h:1") == "http://h:1"


# ---- the FakeEngine app on loopback --------------------------------------------------------


@pytest.fixture
def sync_client(fake_server: LiveServer):
    with WinnowClient(fake_server.base_url, api_key=fake_server.api_key, timeout=10) as client:
        yield client


def test_completion_is_typed_with_winnow_usage(sync_client: WinnowClient):
    r = sync_client.completions("hello", max_tokens=50, strategy=Strategy(name="sample"))
    assert r.choices[0].text == "answer 0 to: hello"
    assert r.usage is not None and r.usage.winnow is not None
    assert r.usage.completion_tokens == 19
    assert r.usage.winnow.generated_tokens == 19
    assert r.usage.winnow.strategy == "sample"
    assert r.usage.winnow.engine_calls == 1


def test_sync_stream_yields_typed_chunks_then_usage(sync_client: WinnowClient):
    chunks = list(sync_client.stream_completions("hey", max_tokens=50, n=2))
    assert all(isinstance(c, CompletionChunk) for c in chunks)
    texts = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == {0: "answer 0 to: hey", 1: "answer 1 to: hey"}
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.winnow is not None
    assert last.usage.winnow.generated_tokens == 2 * 17


def test_listing_and_health(sync_client: WinnowClient):
    assert sync_client.health() is True
    assert sync_client.models().data[0].id == "fake-model"
    strategies = {s.name: s for s in sync_client.strategies()}
    assert "sample" in strategies
    assert strategies["sample"].parameters.get("type") == "object"


def test_errors_are_parsed(sync_client: WinnowClient, fake_server: LiveServer):
    with pytest.raises(WinnowAPIError) as info:
        sync_client.completions("x", strategy={"name": "sample", "beams": 4})
    assert (info.value.status, info.value.param) == (400, "strategy.beams")
    assert info.value.code == "invalid_strategy"
    with pytest.raises(WinnowAPIError) as info:  # the request is refused before any event
        list(sync_client.stream_chat([{"role": "user", "content": "x"}], n=0))
    assert (info.value.status, info.value.param) == (400, "n")
    with WinnowClient(fake_server.base_url, api_key="wrong") as bad:
        with pytest.raises(WinnowAPIError) as info:
            bad.models()
        assert (info.value.status, info.value.type) == (401, "authentication_error")
        assert bad.health() is True  # probes need no key


def test_extra_body_reaches_the_server_and_wins(sync_client: WinnowClient):
    r = sync_client.completions("x", max_tokens=50, extra_body={"max_tokens": 3, "top_k": 5})
    assert r.choices[0].text == "ans"
    with pytest.raises(WinnowAPIError) as info:
        sync_client.completions("x", strategy="sample", extra_body={"strategy": "nope"})
    assert info.value.param == "strategy.name"


def test_unreachable_server_is_a_connection_error():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with WinnowClient(url, timeout=2) as client, pytest.raises(WinnowConnectionError):
        client.models()


def test_async_client_chat_and_stream(fake_server: LiveServer):
    async def go() -> None:
        async with AsyncWinnowClient(fake_server.base_url, api_key=fake_server.api_key) as c:
            messages = [{"role": "user", "content": "hi"}]
            r = await c.chat(messages, max_tokens=50, strategy="sample")
            assert r.choices[0].message.content == "answer 0 to: <user>hi<assistant>"
            assert r.usage is not None and r.usage.winnow is not None
            assert r.winnow is None or r.winnow.strategy == "sample"
            chunks = [ch async for ch in c.stream_chat(messages, max_tokens=5)]
            assert all(isinstance(ch, ChatCompletionChunk) for ch in chunks)
            assert chunks[0].choices[0].delta.role == "assistant"
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
            assert text == "answe"
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
            assert await c.health()
            with pytest.raises(WinnowAPIError):
                await c.completions("x", n=0)

    asyncio.run(go())

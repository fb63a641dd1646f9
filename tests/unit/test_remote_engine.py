"""The remote engine (unit): protocol mapping against a mocked vLLM (tests/support/fake_vllm.py).

The mocked server speaks a character tokenizer (token id = code point, ``§`` is the EOS and only
special token; ``<empty_output>`` is one token, id 16, as in SmolLM2), which keeps expected values
readable. Hosts named in ``FakeVllm.workers`` answer the capability probe as ``winnow worker``
does (tests/unit/test_remote_workers.py). A real vLLM server: tests/engine/test_remote_engine.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.fake_vllm import EOS, FakeVllm, chunk, ids_of, lp_ids, mocked, sse, text_of
from winnow.engine.base import (
    EngineError,
    EngineRequestError,
    EngineUnavailable,
    SamplingSpec,
    TokenLogprob,
)
from winnow.engine.remote.backend import RemoteEngine
from winnow.engine.remote.token_texts import TokenTexts
from winnow.engine.remote.wire import completion_payload, error_for_status, normalize_url, top_k

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


# ---- a mocked vLLM ------------------------------------------------------------------------------


def test_urls_are_normalized() -> None:
    assert normalize_url(" http://h:8000/v1/ ") == "http://h:8000"
    assert normalize_url("https://h/") == "https://h"


def test_payload_carries_every_sampling_field() -> None:
    spec = SamplingSpec(
        prompt=(1, 2, 3),
        n=2,
        max_tokens=7,
        temperature=0.5,
        top_p=0.9,
        top_k=5,
        min_p=0.1,
        presence_penalty=0.2,
        frequency_penalty=0.3,
        repetition_penalty=1.1,
        seed=4,
        stop=("\n\n",),
        stop_token_ids=(9,),
        include_stop_str_in_output=True,
        ignore_eos=True,
        logprobs=3,
        prompt_logprobs=1,
        extra_args={"steps": 2, "labels": ("a", "b")},
    )
    body = completion_payload(spec, "m", stream=False)
    assert body["prompt"] == [1, 2, 3] and body["model"] == "m"
    for field in ("n", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "logprobs"):
        assert body[field] == getattr(spec, field), field
    assert body["repetition_penalty"] == 1.1 and body["frequency_penalty"] == 0.3
    assert body["stop"] == ["\n\n"] and body["stop_token_ids"] == [9]
    assert body["include_stop_str_in_output"] and body["ignore_eos"]
    assert body["prompt_logprobs"] == 1
    assert body["return_token_ids"] and body["return_tokens_as_token_ids"]
    assert body["vllm_xargs"] == {"steps": 2, "labels": ["a", "b"]}
    assert "stream" not in body
    streamed = completion_payload(spec, "m", stream=True)
    assert streamed["stream"] is True and "prompt_logprobs" not in streamed  # vLLM refuses both
    assert completion_payload(SamplingSpec(prompt="hi"), "m", stream=False)["prompt"] == "hi"


def test_top_k_follows_vllm_order() -> None:
    # the sampled token (first) is outside the top-2: drop it, keep rank order
    assert top_k(lp_ids((9, -5.0), (1, -0.1), (2, -0.2)), 2) == ((1, -0.1), (2, -0.2))
    # the sampled token is among the top-2: the entries merged, order by logprob
    assert top_k(lp_ids((2, -0.2), (1, -0.1)), 2) == ((1, -0.1), (2, -0.2))
    assert top_k(lp_ids((2, -0.2)), 0) == ()
    assert top_k(None, 3) == ()


def test_status_codes_map_to_engine_errors() -> None:
    assert type(error_for_status(400, "bad")) is EngineRequestError
    assert type(error_for_status(404, "no model")) is EngineRequestError
    assert type(error_for_status(401, "key")) is EngineError
    assert type(error_for_status(500, "boom")) is EngineError
    assert type(error_for_status(503, "busy")) is EngineUnavailable


async def test_start_learns_the_model() -> None:
    fake = FakeVllm("org/model")
    async with mocked(fake) as engine:
        assert engine.info.name == "org/model"
        assert engine.info.max_model_len == 128
        assert engine.info.eos_token_ids == (ord(EOS),)
        assert engine.texts.batched
    async with mocked(fake, served_name="alias") as engine:
        assert engine.info.name == "alias"


async def test_a_prompt_gets_the_servers_bos_once() -> None:
    """A chat rendered with its own BOS is not given a second one (winnow.models.tokens)."""
    fake = FakeVllm(bos=1)
    async with mocked(fake) as engine:
        assert await engine.tokenize("Hi", add_special_tokens=True) == [1, *ids_of("Hi")]
        assert await engine.tokenize("\x01Hi", add_special_tokens=True) == [1, *ids_of("Hi")]
        assert await engine.tokenize("Hi") == ids_of("Hi")
        calls = sum(fake.hits.values())
        await engine.tokenize("Ho", add_special_tokens=True)
        assert sum(fake.hits.values()) == calls + 1  # the prefix was asked of the server once


async def test_without_tokenizer_info_nothing_special_is_known() -> None:
    async with mocked(FakeVllm(tokenizer_info=False)) as engine:
        assert engine.info.eos_token_ids == ()
        assert await engine.detokenize(ids_of(f"a{EOS}")) == f"a{EOS}"


async def test_generation_maps_choices_logprobs_and_usage() -> None:
    fake = FakeVllm()
    async with mocked(fake) as engine:
        spec = SamplingSpec(prompt="Hi", n=2, logprobs=2, prompt_logprobs=2)
        gen = await engine.generate(spec)
    assert fake.completions[0]["prompt"] == "Hi"
    assert gen.prompt_token_ids == [72, 105]
    assert gen.cached_prompt_tokens == 16
    first, second = gen.completions
    assert (first.index, first.text, first.token_ids) == (0, "Hi", [72, 105])
    assert (first.finish_reason, first.stop_reason) == ("stop", "!")
    assert (second.index, second.finish_reason, second.logprobs) == (1, "length", None)
    assert first.logprobs == [
        TokenLogprob(72, "H", -0.1, ((72, "H", -0.1), (73, "I", -2.5))),
        TokenLogprob(105, "i", -2.0, ((33, "!", -0.5), (63, "?", -1.0))),
    ]
    assert gen.prompt_logprobs == [
        None,
        TokenLogprob(105, "i", -3.0, ((33, "!", -0.2), (63, "?", -1.1))),
    ]


async def test_stream_yields_per_index_deltas() -> None:
    async with mocked(FakeVllm()) as engine:
        events = [e async for e in engine.stream(SamplingSpec(prompt="Hi", n=2, logprobs=0))]
        assert await engine.running_requests() == 0
    assert all(e.prompt_token_ids == [72, 105] for e in events)
    deltas = [d for e in events for d in e.deltas]
    assert [(d.index, d.text, d.token_ids) for d in deltas] == [
        (0, "H", [72]),
        (1, "N", [78]),
        (0, "i", [105]),
        (1, "o", [111]),
    ]
    assert [d.finish_reason for d in deltas] == [None, None, "stop", "length"]
    assert deltas[0].logprobs == [TokenLogprob(72, "H", float("-inf"))]


async def test_remote_errors_become_engine_errors() -> None:
    fake = FakeVllm()
    async with mocked(fake) as engine:
        fake.reply = (400, {"error": {"message": "max_tokens is too large", "code": 400}})
        with pytest.raises(EngineRequestError, match="max_tokens is too large"):
            await engine.generate(SamplingSpec(prompt="x"))
        with pytest.raises(EngineRequestError, match="max_tokens is too large"):
            async for _ in engine.stream(SamplingSpec(prompt="x")):
                pass
        fake.reply = (500, {"error": {"message": "boom", "code": 500}})
        with pytest.raises(EngineError, match="boom") as info:
            await engine.generate(SamplingSpec(prompt="x"))
        assert not isinstance(info.value, EngineRequestError)
        assert await engine.running_requests() == 0


async def test_error_event_inside_a_stream() -> None:
    fake = FakeVllm()
    error = {"error": {"message": "engine died", "type": "InternalServerError", "code": 500}}
    fake.stream_body = sse(chunk(0, "a", [1]), error, "[DONE]")
    async with mocked(fake) as engine:
        seen = []
        with pytest.raises(EngineError, match="engine died"):
            async for event in engine.stream(SamplingSpec(prompt="x")):
                seen.append(event)
        assert len(seen) == 1 and await engine.running_requests() == 0


async def test_extra_args_must_fit_vllm_xargs() -> None:
    fake = FakeVllm()
    async with mocked(fake) as engine:
        with pytest.raises(EngineRequestError, match="extra_args"):
            await engine.generate(SamplingSpec(prompt="x", extra_args={"nested": {"a": 1}}))
    assert fake.completions == []


async def test_round_robin_skips_refused_servers() -> None:
    fake = FakeVllm()
    async with mocked(fake, ("http://a", "http://b/v1")) as engine:
        fake.hits.clear()
        for _ in range(4):
            await engine.tokenize("x")
        assert fake.hits == {"a": 2, "b": 2}
        fake.refuse.add("a")
        for _ in range(4):
            await engine.tokenize("x")
        assert fake.hits == {"a": 2, "b": 6}
        fake.refuse.add("b")
        with pytest.raises(EngineUnavailable, match="no remote vLLM reachable"):
            await engine.tokenize("x")


async def test_start_needs_every_server_and_one_model() -> None:
    fake = FakeVllm()
    fake.refuse.add("b")
    with pytest.raises(EngineUnavailable, match="http://b"):
        async with mocked(fake, ("http://a", "http://b")):
            pass

    class TwoModels(FakeVllm):
        def __call__(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/models" and request.url.host == "b":
                return httpx.Response(200, json={"data": [{"id": "other"}]})
            return super().__call__(request)

    with pytest.raises(EngineError, match="different models"):
        async with mocked(TwoModels(), ("http://a", "http://b")):
            pass


async def test_health_needs_one_healthy_server() -> None:
    fake = FakeVllm()
    async with mocked(fake, ("http://a", "http://b")) as engine:
        await engine.check_health()
        fake.refuse.add("a")
        await engine.check_health()
        fake.healthy = False
        with pytest.raises(EngineUnavailable, match="HTTP 503"):
            await engine.check_health()
    with pytest.raises(EngineUnavailable, match="not started"):
        await RemoteEngine(["http://a"]).check_health()


async def test_chat_template_and_detokenize_go_through_the_server() -> None:
    async with mocked(FakeVllm()) as engine:
        assert await engine.apply_chat_template([{"role": "user", "content": "hi"}]) == (
            f"<user>hi{EOS}"
        )
        assert await engine.tokenize("ab") == [97, 98]
        assert await engine.detokenize(ids_of(f"a{EOS}b")) == "ab"  # EOS is special: skipped


def counting_decoder(decode: Callable[[list[int]], str]) -> tuple[Any, list[list[int]]]:
    calls: list[list[int]] = []

    async def wrapped(ids: list[int]) -> str:
        calls.append(ids)
        return decode(ids)

    return wrapped, calls


async def encode(text: str) -> list[int]:
    return ids_of(text)


async def test_token_texts_are_batched_when_tokens_decode_independently() -> None:
    decode, calls = counting_decoder(text_of)
    texts = TokenTexts(decode)
    await texts.setup(encode)
    assert texts.batched
    calls.clear()
    assert await texts.lookup([104, 105, 104, 0x1E]) == {104: "h", 105: "i", 0x1E: "\x1e"}
    assert len(calls) == 1
    assert await texts.lookup([105]) == {105: "i"}
    assert len(calls) == 1  # cached


async def test_token_texts_fall_back_to_one_call_per_token() -> None:
    # a SentencePiece-like decoder: what it yields depends on the position in the sequence
    decode, calls = counting_decoder(lambda ids: text_of(ids).capitalize())
    texts = TokenTexts(decode)
    await texts.setup(encode)
    assert not texts.batched
    calls.clear()
    assert await texts.lookup([104, 105]) == {104: "H", 105: "I"}
    assert sorted(calls) == [[104], [105]]

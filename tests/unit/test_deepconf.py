"""DeepConf through the strategies, on the scripted fake engine: token confidence recorded with the
candidates, the offline confidence vote (best_of_n, best_of_majority), the online mode (adaptive's
rule confidence, the deepconf preset: warm-up threshold, traces cut inside the engine, consensus
stop), racing samples that are cancelled once the answer is settled, and the remote engine's
refusal.

On the fake engine tokens are characters; a ``↓`` before a character makes its position's token
confidence 1.0 (10.0 elsewhere), and a threshold ends a sample where the engine's rule would
(:data:`winnow.engine.fake.DOUBT`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient

from tests.support.selection import TaggedReward
from winnow.engine.base import CONFIDENCE_STOP, EngineRequestError, SamplingSpec
from winnow.engine.fake import DOUBT, HIGH_CONFIDENCE, LOW_CONFIDENCE, FakeEngine, cycle_script
from winnow.engine.processors.specs import ConfidenceSpec
from winnow.engine.remote.wire import completion_payload
from winnow.metering.engine import MeteredEngine
from winnow.metering.usage import UsageMeter
from winnow.rewards.registry import RewardSet
from winnow.server.app import create_app
from winnow.settings import Settings
from winnow.strategies.parts.confidence import warmup_threshold
from winnow.strategies.parts.race import race

FIVE, SEVEN = "The answer is 5.", "The answer is 7."
DOUBTFUL_SEVEN = f"The answer is {DOUBT}7{DOUBT}."  # two low positions: one window of 2 at 1.0
WINDOW = {"window": 2, "top_k": 20, "statistic": "lowest_group", "eta": 0.9}


def client_for(texts: Sequence[str], engine: FakeEngine | None = None, **rewards):
    engine = engine or FakeEngine(cycle_script(texts))
    reward_set = RewardSet(rewards or {"tagged": TaggedReward()})
    app = create_app(Settings(max_n=64), engine, reward_set)
    return TestClient(app), engine


def ask(client: TestClient, strategy: dict, status: int = 200, **extra) -> dict:
    body = {"prompt": "q", "max_tokens": 100, "strategy": strategy, **extra}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == status, r.text
    return r.json()


# ---- the fake engine's channel -------------------------------------------------------------------


async def _one(engine: FakeEngine, text_spec: ConfidenceSpec) -> object:
    spec = SamplingSpec(prompt="q", max_tokens=100, confidence=text_spec)
    return (await engine.generate(spec)).completions[0]


def test_fake_engine_records_confidence_and_cuts_where_the_rule_does() -> None:
    engine = FakeEngine(cycle_script([f"ab{DOUBT}c{DOUBT}de"]))
    recorded = asyncio.run(_one(engine, ConfidenceSpec(window=2)))
    assert recorded.text == "abcde" and recorded.stop_reason is None
    high, low = HIGH_CONFIDENCE, LOW_CONFIDENCE
    assert recorded.confidence.values == [high, high, low, low, high, high]  # EOS's too
    assert recorded.confidence.cut is None
    cut = asyncio.run(_one(engine, ConfidenceSpec(window=2, threshold=5.0)))
    # the window (c, d) = (1, 1) at position 3: ended before d is sampled
    assert (cut.text, cut.finish_reason, cut.stop_reason) == ("abc", "stop", CONFIDENCE_STOP)
    assert cut.unseen_tokens == 1  # the engine's sentinel
    assert cut.confidence.cut == 3 and cut.confidence.values == [high, high, low, low]
    late = asyncio.run(_one(engine, ConfidenceSpec(window=2, threshold=5.0, min_tokens=4)))
    assert late.stop_reason is None  # the dip came before min_tokens


def test_remote_engine_refuses_token_confidence() -> None:
    spec = SamplingSpec(prompt="q", confidence=ConfidenceSpec())
    with pytest.raises(EngineRequestError, match="local engine"):
        completion_payload(spec, "m", stream=False)


# ---- offline: best_of_n and best_of_majority -----------------------------------------------------


def test_best_of_n_confidence_vote_overrules_a_doubtful_majority_without_a_reward() -> None:
    texts = [DOUBTFUL_SEVEN, DOUBTFUL_SEVEN, DOUBTFUL_SEVEN, FIVE, FIVE]
    strategy = {"name": "best_of_n", "n": 5, "reward": None, "return_candidates": True}
    c, _ = client_for(texts)
    with c:
        majority = ask(c, {**strategy, "selection": "majority"})
        voted = ask(
            c, {**strategy, "selection": "confidence", "token_confidence": WINDOW, "trace": True}
        )
        refused = ask(c, {**strategy, "selection": "best"}, status=400)
    assert majority["choices"][0]["text"] == SEVEN
    assert voted["choices"][0]["text"] == FIVE
    details = voted["winnow"]["details"]
    # every candidate is kept (the bar is 1.0, ties kept): 5 weighs 2 x 10, 7 weighs 3 x 1
    assert details["voters"] == 5 and details["leader_share"] == pytest.approx(20 / 23)
    assert voted["usage"]["winnow"]["reward_calls"] == 0
    reported = voted["winnow"]["candidates"]
    assert [r["confidence"]["lowest_group"] for r in reported] == [1.0, 1.0, 1.0, 10.0, 10.0]
    (trace,) = voted["winnow"]["trace"]
    curve = trace["candidates"][0]["confidence"]
    assert curve["window"] == 2 and curve["curve"][14:16] == [1.0, 1.0] and curve["cut"] is None
    assert {g["answer"]: g["vote"] for g in trace["groups"]} == {"7": 3.0, "5": 20.0}
    assert refused["error"]["param"] == "strategy.reward"


def test_best_of_n_confidence_times_the_reward() -> None:
    texts = [f"{DOUBTFUL_SEVEN} #ninety", f"{FIVE} #ten", f"{FIVE} #ten"]
    c, _ = client_for(texts)
    with c:
        body = ask(c, {"name": "best_of_n", "n": 3, "reward": "tagged", "selection": "confidence",
                       "token_confidence": {**WINDOW, "eta": 1.0}})  # fmt: skip
        kept = ask(c, {"name": "best_of_n", "n": 3, "reward": "tagged", "selection": "confidence",
                       "token_confidence": WINDOW})  # fmt: skip
    # every one votes (eta 1): 7: 1.0 x 0.9 = 0.9; 5: 2 x 10 x 0.1 = 2.0
    assert body["choices"][0]["text"].startswith(FIVE)
    assert body["winnow"]["details"]["leader_share"] == pytest.approx(2.0 / 2.9)
    # eta 0.9: the bar is the 10th percentile, 1 + 0.2 x 9 = 2.8: the doubtful 7 does not vote
    assert kept["winnow"]["details"]["voters"] == 2
    assert kept["winnow"]["details"]["leader_share"] == 1.0


def test_best_of_majority_ranks_by_mean_confidence_without_a_reward() -> None:
    texts = [DOUBTFUL_SEVEN, DOUBTFUL_SEVEN, FIVE, FIVE, "The answer is 9."]
    c, _ = client_for(texts)
    with c:
        body = ask(c, {"name": "best_of_majority", "n": 5, "reward": None,
                       "token_confidence": WINDOW})  # fmt: skip
        refused = ask(c, {"name": "best_of_majority", "n": 5, "reward": None}, status=400)
    assert body["choices"][0]["text"] == FIVE
    assert body["winnow"]["details"]["qualifying_groups"] == 2
    assert "token_confidence" in refused["error"]["message"]


# ---- online: the rule confidence and the deepconf preset -----------------------------------------


def test_deepconf_stops_after_the_warmup_when_the_confident_answer_dominates() -> None:
    c, engine = client_for([FIVE, FIVE, FIVE, DOUBTFUL_SEVEN])
    with c:
        body = ask(c, {"name": "deepconf", "wave": 4, "token_confidence": WINDOW, "trace": True})
    d = body["winnow"]["details"]
    assert body["choices"][0]["text"] == FIVE
    assert (d["waves"], d["stopped"], d["cut"]) == (1, "confident", 0)
    assert d["leader_share"] == pytest.approx(30 / 31)
    # the warm-up's lowest group confidences 10, 10, 10, 1: DeepConf-high's 10th percentile
    assert d["threshold"] == pytest.approx(warmup_threshold([10.0, 10.0, 10.0, 1.0], 0.9))
    assert body["winnow"]["trace"][0]["threshold"] == pytest.approx(d["threshold"])
    assert len(engine.calls) == 1 and engine.calls[0].confidence.threshold is None
    assert body["usage"]["winnow"]["reward_calls"] == 0


def test_deepconf_cuts_later_traces_below_the_warmup_threshold() -> None:
    # warm-up [5, 7?]: threshold 1.9, shares 10/11 < 0.95; the next wave's doubtful 7 is cut
    c, engine = client_for([FIVE, DOUBTFUL_SEVEN, DOUBTFUL_SEVEN, FIVE])
    with c:
        body = ask(
            c,
            {"name": "deepconf", "wave": 2, "max_n": 8, "confidence": 0.95,
             "token_confidence": WINDOW, "return_candidates": True, "trace": True},
        )  # fmt: skip
    d = body["winnow"]["details"]
    assert (d["waves"], d["stopped"], d["cut"]) == (2, "confident", 1)
    assert d["threshold"] == pytest.approx(1.9)
    assert engine.calls[1].confidence.threshold == pytest.approx(1.9)
    cut = body["winnow"]["candidates"][2]
    assert cut["confidence"]["cut"] and cut["answer"] is None and cut["group"] is None
    assert cut["text"] == "The answer is 7"  # nothing past the cut
    traced = body["winnow"]["trace"][0]["candidates"][2]["confidence"]
    assert traced["cut"] == 15 and traced["threshold"] == pytest.approx(1.9)
    assert traced["weight"] is None  # a cut trace does not vote
    # every token counted: 17 + 17 (+ EOS each) + 15 and the cut's sentinel + 17
    assert body["usage"]["winnow"]["generated_tokens"] == 17 + 17 + 16 + 17
    assert d["leader_share"] == pytest.approx(20 / 21)


def test_deepconf_with_a_fixed_threshold_cuts_from_the_first_wave() -> None:
    c, engine = client_for([DOUBTFUL_SEVEN, FIVE])
    with c:
        body = ask(c, {"name": "deepconf", "wave": 2, "max_n": 2,
                       "token_confidence": {**WINDOW, "threshold": 5.0}})  # fmt: skip
    assert engine.calls[0].confidence.threshold == 5.0
    assert body["winnow"]["details"]["cut"] == 1 and body["choices"][0]["text"] == FIVE


def test_adaptive_rule_confidence_with_a_reward_weighs_both() -> None:
    texts = [f"{FIVE} #ten", f"{FIVE} #ten", f"{SEVEN} #ninety", f"{SEVEN} #ninety"]
    c, _ = client_for(texts)
    with c:
        body = ask(c, {"name": "adaptive", "rule": "confidence", "selection": "confidence",
                       "reward": "tagged", "wave": 4, "max_n": 4,
                       "token_confidence": WINDOW})  # fmt: skip
    assert body["choices"][0]["text"].startswith(SEVEN)
    assert body["winnow"]["details"]["leader_share"] == pytest.approx(18 / 20)


def test_deepconf_parameters_are_checked() -> None:
    c, _ = client_for([FIVE])
    with c:
        for bad, param in (
            ({"token_confidence": {"window": 0}}, "strategy.token_confidence.window"),
            ({"token_confidence": {"eta": 1.5}}, "strategy.token_confidence.eta"),
            ({"token_confidence": {"threshold": -1}}, "strategy.token_confidence.threshold"),
            ({"rule": "agreement", "race": True}, "strategy.race"),
            ({"confidence": 1.0}, "strategy.confidence"),
        ):
            error = ask(c, {"name": "deepconf", **bad}, status=400)["error"]
            assert error["param"] == param, error


# ---- racing: read as they finish, cancel the rest ------------------------------------------------


def test_race_cancels_the_samples_still_running_once_settled() -> None:
    short, long = FIVE, "The answer is, after a long think, 9." * 3
    engine = FakeEngine(cycle_script([short, short, long, long]), token_delay=0.002)
    meter = UsageMeter()
    metered = MeteredEngine(engine, meter)
    seen: list[str] = []

    async def settle(completion, prompt) -> bool:
        seen.append(completion.text)
        return len(seen) == 2

    spec = SamplingSpec(prompt="q", max_tokens=200, seed=7)
    finished, cancelled = asyncio.run(race(metered, spec, 4, 10, settle))
    assert [c.text for c in finished] == [short, short] and cancelled == 2
    assert [c.index for c in finished] == [10, 11]
    assert engine.aborted == 2
    assert [s.seed for s in engine.calls] == [7, 8, 9, 10]  # the children of one n=4 call
    # the short ones whole (and EOS), the long ones as far as they had come
    assert 2 * 17 < meter.generated_tokens < 2 * 17 + 2 * len(long)


def test_deepconf_race_answers_before_the_long_samples_end() -> None:
    long = "Let me think about this for quite a while first. " * 2 + "The answer is 9."
    engine = FakeEngine(cycle_script([FIVE, FIVE, FIVE, long]), token_delay=0.002)
    c, _ = client_for([], engine=engine)
    with c:
        body = ask(c, {"name": "deepconf", "wave": 4, "min_n": 3, "race": True,
                       "token_confidence": WINDOW})  # fmt: skip
    d = body["winnow"]["details"]
    assert body["choices"][0]["text"] == FIVE
    assert (d["candidates"], d["cancelled"], d["stopped"]) == (3, 1, "confident")
    assert engine.aborted == 1


def test_confidence_stream_needs_one_sample() -> None:
    engine = FakeEngine(cycle_script([FIVE]))

    async def stream() -> None:
        async for _ in engine.stream(SamplingSpec(prompt="q", n=2, confidence=ConfidenceSpec())):
            pass

    with pytest.raises(EngineRequestError):
        asyncio.run(stream())


def test_streamed_deepconf_sends_the_chosen_answer() -> None:
    c, _ = client_for([FIVE, FIVE, FIVE, DOUBTFUL_SEVEN])
    with c:
        r = c.post("/v1/chat/completions", json={
            "model": "fake-model", "messages": [{"role": "user", "content": "q"}],
            "max_tokens": 100, "stream": True, "strategy": {"name": "deepconf", "wave": 4},
        })  # fmt: skip
    assert r.status_code == 200
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == FIVE

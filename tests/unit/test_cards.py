"""CARDS on the scripted fake engine: segmentation, threshold schedule, acceptance, fallback."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient

from tests.support.cards import LastWordReward, queue, run
from winnow.engine.base import SegmentSpec
from winnow.engine.fake import FakeEngine
from winnow.rewards.base import OutcomeItem, RewardInfo, Scored
from winnow.rewards.registry import RewardSet
from winnow.server.app import create_app
from winnow.settings import Settings
from winnow.strategies.cards import accepts, threshold


def test_threshold_rises_from_r0_to_r_star_and_stays():
    assert threshold(0, 0.4, 0.8, 100) == pytest.approx(0.4)
    assert threshold(50, 0.4, 0.8, 100) == pytest.approx(0.6)
    assert threshold(100, 0.4, 0.8, 100) == pytest.approx(0.8)
    assert threshold(250, 0.4, 0.8, 100) == pytest.approx(0.8)


def test_soft_acceptance_is_exp_of_the_margin_over_beta():
    p = math.exp((0.3 - 0.5) / 0.7)
    assert accepts(0.3, 0.5, 0.7, "soft", p - 1e-9)
    assert not accepts(0.3, 0.5, 0.7, "soft", p + 1e-9)
    assert accepts(0.9, 0.5, 0.7, "soft", 0.999999)  # above tau: always
    assert not accepts(0.49, 0.5, 0.7, "hard", 0.0)
    assert accepts(0.5, 0.5, 0.7, "hard", 0.99)
    assert not accepts(float("nan"), 0.0, 0.7, "soft", 0.0)


def test_hard_acceptance_rejects_bad_segments_and_counts_them():
    r, engine, reward = run(
        ["bad one¦ x", "good one¦ x", " bad two¦ y", " good two"],
        {"acceptance": "hard", "min_segment_tokens": 4},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["text"] == "good one good two"
    assert body["choices"][0]["finish_reason"] == "stop"
    details = body["winnow"]["details"]
    assert details["segments"] == 2 and details["candidates"] == 4 and details["rejections"] == 2
    assert details["rejections_per_segment"] == [[1, 1]]
    assert details["r0"] == pytest.approx(0.5 * 0.0 + 0.5 * 0.8)  # RM(prompt) = 0
    # every call is cut by the engine, with the request's rule
    assert all(c.segment == SegmentSpec(entropy=3.0, min_tokens=4) for c in engine.calls)
    # honest accounting: the rejected segments' tokens count as generated
    written = len("bad one") + len("good one") + len(" bad two") + len(" good two") + 1  # + EOS
    written += 3  # and the sentinel token of each of the 3 segment cuts
    assert body["usage"]["winnow"]["generated_tokens"] == written
    assert body["usage"]["completion_tokens"] == len("good one good two") + 1
    assert body["usage"]["winnow"]["reward_calls"] == 5  # RM(prompt) + 4 candidates
    assert reward.seen[0] == ""  # the threshold schedule starts from RM(prompt)


def test_min_segment_tokens_skips_early_uncertainty():
    r, _, _ = run(["ok¦ good one¦ rest"], {"acceptance": "hard", "min_segment_tokens": 4})
    assert r.json()["choices"][0]["text"].startswith("ok good one")


def test_after_max_rejections_the_best_candidate_is_taken():
    r, _, _ = run(
        ["bad a", "meh b", "bad c"],
        {"acceptance": "hard", "max_rejections": 3},
    )
    body = r.json()
    assert body["choices"][0]["text"] == "meh b"
    assert body["winnow"]["details"]["forced_accepts"] == 1
    assert body["winnow"]["details"]["candidates"] == 3


def test_segment_cap_continues_until_max_tokens():
    r, engine, _ = run(
        ["good aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],
        {"max_segment_tokens": 8, "acceptance": "hard"},
        max_tokens=20,
    )
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["text"]) == 20
    assert [c.max_tokens for c in engine.calls] == [8, 8, 4]


def test_soft_acceptance_is_reproducible_with_a_seed():
    texts = ["meh a¦ ", " bad b¦ ", " meh c¦ ", " good d"] * 10
    first = run(texts, {"acceptance": "soft"})[0].json()
    second = run(texts, {"acceptance": "soft"})[0].json()
    assert first["choices"][0]["text"] == second["choices"][0]["text"]
    assert first["winnow"]["details"] == second["winnow"]["details"]


def test_n_chains_run_independently():
    r, _, _ = run(["good a¦ b", " good c"] * 4, {"acceptance": "hard"}, n=2)
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert len(body["winnow"]["details"]["rejections_per_segment"]) == 2


def test_streaming_sends_each_accepted_segment_once():
    reward = LastWordReward()
    engine = FakeEngine(queue(["bad x¦ y", "good one¦ x", " good two"]))
    app = create_app(Settings(), engine, RewardSet({"words": reward}))
    payload = {"prompt": "Q:", "max_tokens": 40, "seed": 1, "stream": True,
               "strategy": {"name": "cards", "reward": "words", "acceptance": "hard"}}  # fmt: skip
    with TestClient(app) as client, client.stream("POST", "/v1/completions", json=payload) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    texts = [c["choices"][0]["text"] for c in chunks if c["choices"]]
    assert "".join(texts) == "good one good two"
    assert [t for t in texts if t] == ["good one", " good two"]  # bad x never went out
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_reward_without_calibration_needs_r_star():
    r, engine, _ = run(["good"], {}, reward=LastWordReward(r_star=None))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "strategy.r_star"
    assert not engine.calls
    ok, _, _ = run(["good"], {"r_star": 0.5}, reward=LastWordReward(r_star=None))
    assert ok.status_code == 200


def test_bad_parameters_are_400():
    r, _, _ = run(["good"], {"min_segment_tokens": 10, "max_segment_tokens": 5})
    assert r.status_code == 400 and "min_segment_tokens" in r.json()["error"]["message"]
    r, _, _ = run(["good"], {"beta": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "strategy.beta"


class ProbabilityReward(LastWordReward):
    """The same tags on a probability scale, calibrated like the trained default reward."""

    def __init__(self) -> None:
        calibration = {"r_star": 0.5, "r_star_log_odds": 0.0}
        self._info = RewardInfo(
            "prob", "outcome", "test", "probability in [0, 1]", extra={"calibration": calibration}
        )
        self.seen = []


def test_probability_rewards_are_scored_as_log_odds():
    reward = ProbabilityReward()
    r, _, _ = run(["meh a"], {"acceptance": "hard"}, reward=reward)
    details = r.json()["winnow"]["details"]
    assert details["r_star"] == 0.0  # the calibrated log-odds r_star
    assert details["r0"] == pytest.approx(0.5 * math.log(1e-6 / (1 - 1e-6)))  # RM(prompt) = 0
    assert r.json()["choices"][0]["text"] == "meh a"
    raw, _, _ = run(["meh a"], {"acceptance": "hard", "log_odds": False}, reward=reward)
    assert raw.json()["winnow"]["details"]["r_star"] == 0.5


def test_a_stop_string_spanning_two_segments_ends_the_answer_before_it():
    # the engine cuts "good one\n" (at the mark), then writes "\nQuestion two" on its own: it
    # never saw "\n\nQ" whole, cards must cut it
    texts = ["good one\n¦ x", "\nQuestion two good"]
    r, _, reward = run(texts, {"acceptance": "hard"}, stop=["\n\nQ"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["text"] == "good one"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == len("good one")  # one token per character
    assert reward.seen[-1] == "good one"  # the cut answer is what was scored


def test_streaming_holds_back_what_could_start_a_stop_string():
    engine = FakeEngine(queue(["good one\n¦ x", "\nQuestion two good"]))
    app = create_app(Settings(), engine, RewardSet({"words": LastWordReward()}))
    payload = {"prompt": "Q:", "max_tokens": 40, "seed": 1, "stream": True, "stop": ["\n\nQ"],
               "strategy": {"name": "cards", "reward": "words", "acceptance": "hard"}}  # fmt: skip
    with TestClient(app) as client, client.stream("POST", "/v1/completions", json=payload) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    texts = [c["choices"][0]["text"] for c in chunks if c["choices"]]
    assert [t for t in texts if t] == ["good on", "e"]  # "e\n" waited: it might begin "\n\nQ"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_short_horizon_raises_the_threshold_sooner():
    texts = ["meh a¦ x", "good b"]
    strategy = {"acceptance": "hard", "r_star": 0.5}  # r0 = 0.25; "meh" scores 0.3
    r, _, _ = run(texts, strategy)  # tau(5) = 0.25 + 5 * 0.25 / 40 = 0.28: meh passes
    assert r.json()["choices"][0]["text"] == "meh agood b"
    r, _, _ = run(texts, {**strategy, "horizon": 4})  # tau(5) = r_star = 0.5: meh fails
    assert r.json()["choices"][0]["text"] == "good b"
    assert r.json()["winnow"]["details"]["rejections"] == 1


class VoidReward(LastWordReward):
    """The tag words, and no score at all (NaN) for a prefix whose last word is "void" (or, with
    ``void_prompt``, for the bare prompt)."""

    def __init__(self, void_prompt: bool = False) -> None:
        super().__init__()
        self.void_prompt = void_prompt

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        scored = await super().score(items)
        for k, i in enumerate(items):
            words = i.response.replace("¦", " ").split()
            if (words and words[-1] == "void") or (self.void_prompt and not i.response):
                scored.scores[k] = math.nan
        return scored


def test_an_unscored_first_candidate_is_never_the_forced_best():
    # NaN first: "x > NaN" is False, so the unscored candidate stayed best and was forced in
    r, _, _ = run(["a void", "meh b", "bad c"], {"acceptance": "hard", "max_rejections": 3},
                  reward=VoidReward())  # fmt: skip
    body = r.json()
    assert body["choices"][0]["text"] == "meh b"
    assert body["winnow"]["details"]["forced_accepts"] == 1


def test_an_unscored_prompt_is_a_clear_400_not_a_pinned_threshold():
    r, _, _ = run(["good a"], {"acceptance": "hard"}, reward=VoidReward(void_prompt=True))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "strategy.reward"
    assert "NaN" in r.json()["error"]["message"]


class FailsAfterPrompt(LastWordReward):
    """Scores RM(prompt), then its backend fails on the first segment."""

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        if any(i.response for i in items):
            raise RuntimeError("reward backend exploded")
        return await super().score(items)


def test_a_reward_failure_inside_a_chain_is_the_reward_error_not_an_exception_group():
    r, _, _ = run(["one good ¦ two"], {}, FailsAfterPrompt(), n=2)
    assert r.status_code == 500, r.text
    error = r.json()["error"]
    assert error["code"] == "reward_error" and "exploded" in error["message"]

"""best_of_n and best_of_majority on the scripted fake engine with a scripted reward."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient

from tests.support.selection import CANDIDATES, LogitReward, TaggedReward, client_for
from winnow.engine.base import Completion
from winnow.metering.rewards import MeteredRewards
from winnow.metering.usage import UsageMeter
from winnow.rewards.base import OutcomeItem, Scored
from winnow.rewards.registry import RewardSet
from winnow.rewards.verifier import VerifierReward
from winnow.strategies.parts.selection import (
    Candidate,
    aggregate,
    as_is,
    majority_threshold,
    pick_best_of_majority,
    probability_reading,
    sigmoid,
)


class Broken(TaggedReward):
    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        raise RuntimeError("reward backend exploded")


def ask(client: TestClient, strategy: dict, n: int = 1, **extra) -> dict:
    r = client.post(
        "/v1/completions",
        json={"prompt": "q", "max_tokens": 100, "n": n, "strategy": strategy, **extra},
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_best_returns_highest_score_and_counts_discards():
    with client_for(TaggedReward()) as c:
        body = ask(c, {"name": "best_of_n", "n": 6, "reward": "tagged"})
    (choice,) = body["choices"]
    assert choice["text"] == "I do not know. #ninetyfive"
    usage = body["usage"]
    total = sum(len(t) + 1 for t in CANDIDATES)  # characters + EOS each
    assert usage["winnow"]["generated_tokens"] == total
    assert usage["completion_tokens"] == len(CANDIDATES[4]) + 1
    assert usage["winnow"]["discarded_tokens"] == total - usage["completion_tokens"]
    assert usage["winnow"]["engine_calls"] == 1  # N samples in one engine call
    assert usage["winnow"]["reward_calls"] == 1
    assert usage["winnow"]["reward_tokens"] == 60
    assert body.get("winnow") is None or body["winnow"].get("candidates") is None


def test_client_n_returns_the_n_best_in_order():
    with client_for(TaggedReward()) as c:
        body = ask(c, {"name": "best_of_n", "n": 6, "reward": "tagged"}, n=2)
    assert [ch["text"] for ch in body["choices"]] == [CANDIDATES[4], CANDIDATES[0]]
    assert [ch["index"] for ch in body["choices"]] == [0, 1]


def test_weighted_vote_sums_scores_per_answer():
    # answer 7: 0.4 + 0.45 + 0.3 = 1.15 beats answer 5: 0.9 + 0.1 = 1.0; "I do not know": no group
    with client_for(TaggedReward()) as c:
        body = ask(
            c,
            {"name": "best_of_n", "n": 6, "reward": "tagged", "selection": "weighted_vote",
             "return_candidates": True},
        )  # fmt: skip
    assert body["choices"][0]["text"] == "The answer is 7. #fortyfive"  # the group's best member
    candidates = body["winnow"]["candidates"]
    assert len(candidates) == 6
    unparsed = [c for c in candidates if c["group"] is None]
    assert [c["text"] for c in unparsed] == ["I do not know. #ninetyfive"]
    assert "no parseable final answer" in unparsed[0]["note"]
    assert sum(c["chosen"] for c in candidates) == 1


def test_majority_needs_no_reward_call():
    reward = TaggedReward()
    with client_for(reward) as c:
        body = ask(c, {"name": "best_of_n", "n": 6, "selection": "majority", "reward": "tagged"})
    assert body["choices"][0]["text"].startswith("The answer is 7.")
    assert reward.calls == 0
    assert body["usage"]["winnow"]["reward_calls"] == 0


def test_ties_break_towards_the_earlier_candidate():
    texts = ["The answer is 1. #fifty", "The answer is 2. #fifty"]
    with client_for(TaggedReward(), texts=texts) as c:
        body = ask(c, {"name": "best_of_n", "n": 2, "reward": "tagged", "selection": "best"})
        assert body["choices"][0]["text"] == texts[0]
        body = ask(c, {"name": "best_of_n", "n": 2, "reward": "tagged", "selection": "majority"})
        assert body["choices"][0]["text"] == texts[0]


def test_vote_with_fewer_groups_than_n_fills_with_best_others():
    with client_for(TaggedReward()) as c:
        body = ask(
            c, {"name": "best_of_n", "n": 6, "reward": "tagged", "selection": "weighted_vote"}, n=3
        )
    texts = [ch["text"] for ch in body["choices"]]
    assert texts[:2] == ["The answer is 7. #fortyfive", "The answer is 5. #ninety"]
    assert texts[2] == "I do not know. #ninetyfive"  # no third group: the best remaining candidate


def test_process_reward_aggregations():
    texts = [
        "Step one #ninety\n\nThe answer is 3. #twenty",
        "Step one #fifty\n\nThe answer is 4. #forty",
    ]
    prm = TaggedReward("prm", kind="process")
    with client_for(prm, texts=texts) as c:
        last = ask(c, {"name": "best_of_n", "n": 2, "reward": "prm", "aggregation": "last"})
        low = ask(c, {"name": "best_of_n", "n": 2, "reward": "prm", "aggregation": "min"})
        prod = ask(c, {"name": "best_of_n", "n": 2, "reward": "prm", "aggregation": "prod"})
    assert last["choices"][0]["text"] == texts[1]  # 0.4 > 0.2
    assert low["choices"][0]["text"] == texts[1]  # min 0.4 > 0.2
    assert prod["choices"][0]["text"] == texts[1]  # 0.2 > 0.18


def test_best_of_majority_ranks_groups_by_mean_and_filters_by_alpha():
    # answer 5: mean (0.9 + 0.1) / 2 = 0.5; answer 7: mean 0.383
    with client_for(TaggedReward()) as c:
        body = ask(c, {"name": "best_of_majority", "n": 6, "reward": "tagged", "k": 2})
        assert [ch["text"] for ch in body["choices"]] == [CANDIDATES[0], CANDIDATES[2]]
        assert body["winnow"]["details"]["qualifying_groups"] == 2
        # alpha 0.4: only answer 7 (3/6) qualifies; k=2 gives fewer than k back
        body = ask(
            c, {"name": "best_of_majority", "n": 6, "reward": "tagged", "k": 2, "alpha": 0.4}
        )
        assert [ch["text"] for ch in body["choices"]] == [CANDIDATES[2]]


def test_best_of_majority_with_no_parseable_answer_returns_the_best_scored_candidate():
    texts = ["no idea #twenty", "none #thirty"]
    with client_for(TaggedReward(), texts=texts) as c:
        body = ask(c, {"name": "best_of_majority", "n": 2, "reward": "tagged", "k": 2})
    # clients read choices[0]: as pick_by_groups, the best-scored candidate when no group exists
    assert [ch["text"] for ch in body["choices"]] == ["none #thirty"]
    details = body["winnow"]["details"]
    assert details["qualifying_groups"] == 0 and details["returned"] == 1
    assert "best-scored" in details["fallback"]
    assert body["usage"]["completion_tokens"] == len(texts[1]) + 1


@pytest.mark.parametrize(
    ("strategy", "n", "param"),
    [
        ({"name": "best_of_n", "n": 2, "reward": "tagged"}, 3, "n"),
        ({"name": "best_of_n", "n": 99, "reward": "tagged"}, 1, "strategy.n"),
        ({"name": "best_of_n", "n": 4, "reward": "tagged", "k": 2}, 1, "strategy.k"),
        ({"name": "best_of_majority", "n": 4, "reward": "tagged", "k": 5}, 1, "strategy.k"),
        ({"name": "best_of_n", "n": 4, "selection": "top"}, 1, "strategy.selection"),
    ],
)
def test_bad_strategy_parameters_are_400(strategy, n, param):
    with client_for(TaggedReward()) as c:
        r = c.post("/v1/completions", json={"prompt": "q", "n": n, "strategy": strategy})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_unknown_reward_lists_configured_ones():
    with client_for(TaggedReward()) as c:
        r = c.post(
            "/v1/completions",
            json={"prompt": "q", "strategy": {"name": "best_of_n", "reward": "nope"}},
        )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unknown_reward"
    assert "tagged" in r.json()["error"]["message"]


def test_failing_reward_is_a_clear_5xx_and_server_goes_on():
    with client_for(Broken("broken"), TaggedReward()) as c:
        r = c.post(
            "/v1/completions",
            json={"prompt": "q", "strategy": {"name": "best_of_n", "n": 2, "reward": "broken"}},
        )
        assert r.status_code == 500
        assert "broken" in r.json()["error"]["message"]
        assert r.json()["error"]["code"] == "reward_error"
        assert ask(c, {"name": "best_of_n", "n": 2, "reward": "tagged"})["choices"]


def test_ad_hoc_composite_reward_weights():
    with client_for(TaggedReward("a"), TaggedReward("b")) as c:
        body = ask(c, {"name": "best_of_n", "n": 6, "reward": {"a": 1.0, "b": -2.0}})
    # a - 2b = -score: the lowest tag wins
    assert body["choices"][0]["text"] == "The answer is 5. #ten"


def test_deciding_strategy_streams_the_chosen_answer_once():
    with client_for(TaggedReward()) as c:
        payload = {
            "prompt": "q",
            "max_tokens": 100,
            "stream": True,
            "stream_options": {"include_usage": True},
            "strategy": {"name": "best_of_n", "n": 6, "reward": "tagged"},
        }
        with c.stream("POST", "/v1/completions", json=payload) as r:
            lines = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    import json

    chunks = [json.loads(x) for x in lines[:-1]]
    assert chunks[0]["choices"][0]["text"] == CANDIDATES[4]
    assert (
        chunks[-1]["usage"]["winnow"]["generated_tokens"] > chunks[-1]["usage"]["completion_tokens"]
    )


# ---- reward scales, unscored candidates, the best-of-majority filter (issue 13) ---------------


def test_weighted_vote_on_a_logit_reward_votes_with_probabilities():
    # raw sums: answer 7 has -1 * 3 = -3 and loses to answer 5's single -2; as probabilities
    # 3 * sigmoid(-1) = 0.81 beats sigmoid(-2) = 0.12
    texts = ["The answer is 5. #minustwo"] + ["The answer is 7. #minusone"] * 3
    with client_for(LogitReward(), texts=texts) as c:
        strategy = {"name": "best_of_n", "n": 4, "reward": "logit", "selection": "weighted_vote",
                    "return_candidates": True}  # fmt: skip
        body = ask(c, strategy)
    assert body["choices"][0]["text"] == texts[1]
    # the candidates' scores stay on the reward's own scale
    assert [c["score"] for c in body["winnow"]["candidates"]] == [-2.0, -1.0, -1.0, -1.0]


def test_prod_of_logit_step_scores_multiplies_probabilities():
    # two steps at -3: the raw product +9 would beat two steps at +1 (product 1)
    texts = [
        "A #minusthree\n\nThe answer is 3. #minusthree",
        "B #plusone\n\nThe answer is 4. #plusone",
    ]
    with client_for(LogitReward("prm", kind="process"), texts=texts) as c:
        body = ask(
            c,
            {"name": "best_of_n", "n": 2, "reward": "prm", "aggregation": "prod",
             "return_candidates": True},
        )  # fmt: skip
    assert body["choices"][0]["text"] == texts[1]
    scores = [c["score"] for c in body["winnow"]["candidates"]]
    assert scores == pytest.approx([sigmoid(-3.0) ** 2, sigmoid(1.0) ** 2])


def test_probability_reading_follows_each_rewards_declared_scale():
    usage = UsageMeter()
    rewards = MeteredRewards(
        RewardSet(
            {
                "p": TaggedReward("p"),
                "q": TaggedReward("q"),
                "logit": LogitReward(),
                "verifier": VerifierReward(),
            }
        ),
        usage,
    )
    assert probability_reading(rewards, "p") is as_is
    assert probability_reading(rewards, "verifier") is as_is
    assert probability_reading(rewards, "logit") is sigmoid
    # a weighted sum of probabilities with non-negative weights: a mixture, in [0, 1]
    assert probability_reading(rewards, {"p": 1.0, "q": 3.0})(2.0) == pytest.approx(0.5)
    assert probability_reading(rewards, {"p": 1.0, "logit": 1.0}) is sigmoid
    assert probability_reading(rewards, {"p": 1.0, "q": -1.0}) is sigmoid
    assert sigmoid(-1000.0) == 0.0 and sigmoid(1000.0) == 1.0  # no overflow


def test_unscored_answers_vote_nothing_on_a_logit_scale():
    # NaN counted as 0 on a logit scale is a HIGH score: three unscored 7s outvoted one 5 at -0.5
    texts = ["The answer is 5. #minushalf"] + ["The answer is 7. #unscored"] * 3
    with client_for(LogitReward(), texts=texts) as c:
        vote = ask(
            c,
            {"name": "best_of_n", "n": 4, "reward": "logit", "selection": "weighted_vote",
             "return_candidates": True},
        )  # fmt: skip
        best = ask(c, {"name": "best_of_n", "n": 4, "reward": "logit"})
    assert vote["choices"][0]["text"] == texts[0]
    assert [c["score"] for c in vote["winnow"]["candidates"]][1:] == [None] * 3
    assert best["choices"][0]["text"] == texts[0]


def test_unscored_answers_have_the_worst_mean_in_best_of_majority():
    # mean of two unscored 7s was 0 > -1, the mean of the two 5s
    texts = ["The answer is 5. #minusone", "The answer is 7. #unscored"] * 2
    with client_for(LogitReward(), texts=texts) as c:
        body = ask(c, {"name": "best_of_majority", "n": 4, "reward": "logit"})
    assert body["choices"][0]["text"] == texts[0]


def test_nan_step_scores_are_the_worst_whatever_their_position():
    nan = math.nan
    assert math.isnan(aggregate([0.9, nan], "min"))  # min() kept 0.9: NaN compares False
    assert math.isnan(aggregate([nan, 0.9], "min"))
    assert math.isnan(aggregate([0.5, nan], "prod"))
    assert aggregate([nan, 0.7], "last") == 0.7  # "last" reads only the last step
    assert math.isnan(aggregate([], "last"))


def test_best_of_majority_keeps_only_repeated_answers_by_default():
    # published alpha = 0.01 passes the singleton 9 at N = 4 (1/4 > 0.01): best mean 0.95 won
    texts = ["The answer is 9. #ninetyfive", "The answer is 7. #forty", "The answer is 7. #thirty",
             "The answer is 8. #ninety"]  # fmt: skip
    with client_for(TaggedReward(), texts=texts) as c:
        body = ask(c, {"name": "best_of_majority", "n": 4, "reward": "tagged"})
        published = ask(c, {"name": "best_of_majority", "n": 4, "reward": "tagged", "min_count": 1})
    assert body["choices"][0]["text"] == texts[1]
    details = body["winnow"]["details"]
    assert details["min_group_size"] == 2
    assert details["qualifying_groups"] == 1 and details["groups"] == 3
    assert published["choices"][0]["text"] == texts[0]
    assert published["winnow"]["details"]["qualifying_groups"] == 3


def test_best_of_majority_threshold_grows_with_alpha_and_yields_to_the_largest_group():
    def cands(*groups: int | None) -> list[Candidate]:
        return [
            Candidate(Completion(i, "", [], "stop"), 0.5, None if g is None else str(g), g)
            for i, g in enumerate(groups)
        ]

    assert majority_threshold(cands(0, 1, 2, 3), 0.01) == 1  # no answer repeats: all pass
    assert majority_threshold(cands(0, 0, 1, 2), 0.01) == 2
    assert majority_threshold(cands(*[0] * 5, *range(1, 31)), 0.1) == 4  # ceil(0.1 * 35)
    assert majority_threshold(cands(*[0] * 3, *range(1, 31)), 0.1) == 3  # capped at 3
    assert majority_threshold(cands(*[0] * 3, *range(1, 28)), 0.1) == 3  # 0.1 * 30: not 4
    assert majority_threshold(cands(None, None), 0.01) == 0
    chosen, passed = pick_best_of_majority(cands(None, None), 1, 0.01)
    assert passed == 0 and [c.completion.index for c in chosen] == [0]


def test_strategy_schemas_describe_the_new_parameters():
    with client_for(TaggedReward()) as c:
        data = {s["name"]: s for s in c.get("/v1/strategies").json()["data"]}
    bom = json.dumps(data["best_of_majority"])
    assert "min_count" in bom and "largest group" in bom
    assert "probabilities" in json.dumps(data["best_of_n"])
    assert "probabilities" in json.dumps(data["tree_search"])

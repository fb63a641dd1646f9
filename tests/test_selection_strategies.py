"""best_of_n and best_of_majority on the scripted fake engine with a scripted reward."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient

from winnow.engine.fake import FakeEngine, cycle_script
from winnow.rewards.base import OutcomeItem, ProcessItem, Reward, RewardInfo, Scored, StepScored
from winnow.rewards.registry import RewardSet
from winnow.server.app import create_app
from winnow.settings import Settings


class TaggedReward(Reward):
    """Scores a response by the score tag after its last "#" ("The answer is 5. #high"), or by
    each step's tag for a process reward (obviously fake; tags are words so that no number in
    them is taken for an answer)."""

    def __init__(self, name: str = "tagged", kind: str = "outcome") -> None:
        self._info = RewardInfo(name, kind, "test", "the #tag")  # type: ignore[arg-type]
        self.calls = 0

    @property
    def info(self) -> RewardInfo:
        return self._info

    @staticmethod
    def _tag(text: str) -> float:
        return TAGS.get(text.rsplit("#", 1)[-1].strip(), 0.0) if "#" in text else 0.0

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        if self.info.kind == "process":
            return await super().score(items)
        self.calls += 1
        return Scored([self._tag(i.response) for i in items], tokens=10 * len(items))

    async def score_steps(self, items: Sequence[ProcessItem]) -> StepScored:
        self.calls += 1
        return StepScored([[self._tag(s) for s in i.steps] for i in items], tokens=5)


class Broken(TaggedReward):
    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        raise RuntimeError("reward backend exploded")


TAGS = {"ninety": 0.9, "forty": 0.4, "fortyfive": 0.45, "thirty": 0.3, "ninetyfive": 0.95,
        "ten": 0.1, "fifty": 0.5, "twenty": 0.2}  # fmt: skip
CANDIDATES = [
    "The answer is 5. #ninety",
    "The answer is 7. #forty",
    "The answer is 7. #fortyfive",
    "The answer is 7. #thirty",
    "I do not know. #ninetyfive",
    "The answer is 5. #ten",
]


def client_for(*rewards: Reward, texts: Sequence[str] = CANDIDATES) -> TestClient:
    reward_set = RewardSet({r.info.name: r for r in rewards} or {"tagged": TaggedReward()})
    app = create_app(Settings(max_n=16), FakeEngine(cycle_script(texts)), reward_set)
    return TestClient(app)


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


def test_best_of_majority_with_no_parseable_answer_returns_no_choice():
    texts = ["no idea #thirty", "none #twenty"]
    with client_for(TaggedReward(), texts=texts) as c:
        body = ask(c, {"name": "best_of_majority", "n": 2, "reward": "tagged"})
    assert body["choices"] == []
    assert body["usage"]["completion_tokens"] == 0
    assert (
        body["usage"]["winnow"]["discarded_tokens"] == body["usage"]["winnow"]["generated_tokens"]
    )


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

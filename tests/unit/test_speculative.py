"""speculative_rejection (unit) on the scripted fake engine (no tap there: partial texts are scored
by a reward call) with a reward that reads a tag written at the start of each response. Through
HTTP on the real engine, where the tap gives the partial scores: tests/engine/test_speculative.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi.testclient import TestClient

from winnow.engine.fake import FakeEngine, cycle_script
from winnow.rewards.base import OutcomeItem, Reward, RewardInfo, Scored
from winnow.rewards.registry import RewardSet
from winnow.server.app import create_app
from winnow.settings import Settings

VALUES = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.3, "e": 0.2, "f": 0.1}
PAD = " and so on" * 6


class LeadingTag(Reward):
    """Scores a (partial) response by the letter after its first ``#``; records what it saw."""

    def __init__(self) -> None:
        self._info = RewardInfo("lead", "outcome", "test", "probability in [0, 1]: the tag")
        self.seen: list[list[str]] = []

    @property
    def info(self) -> RewardInfo:
        return self._info

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        self.seen.append([i.response for i in items])
        return Scored([VALUES.get(i.response.split("#", 1)[-1][:1], 0.0) for i in items], 3)


def texts() -> list[str]:
    return [f"#{tag}{PAD} The answer is {i}." for i, tag in enumerate("dafbec")]


def run(
    strategy: dict, n: int = 1, script: Sequence[str] | None = None
) -> tuple[dict, FakeEngine, LeadingTag]:
    reward = LeadingTag()
    engine = FakeEngine(cycle_script(script or texts()), delay=0.3)
    app = create_app(Settings(max_n=16), engine, RewardSet({"lead": reward}))
    with TestClient(app) as client:
        r = client.post(
            "/v1/completions",
            json={"prompt": "q", "max_tokens": 200, "n": n, "temperature": 1.0,
                  "strategy": {"name": "speculative_rejection", "reward": "lead", **strategy}},
        )  # fmt: skip
        assert r.status_code == 200, r.text
    return r.json(), engine, reward


def test_lowest_partial_scores_are_aborted_and_the_best_survivor_returned():
    body, engine, reward = run({"n": 6, "interval": 8, "rejection_rate": 0.5,
                                "return_candidates": True})  # fmt: skip
    details = body["winnow"]["details"]
    # 6 running: abort 3 (d, e, f); 3: abort 1 (c); 2: abort 1 (b); one left
    assert [d["aborted"] for d in details["decisions"]] == [3, 1, 1]
    assert [d["tokens"] for d in details["decisions"]] == [8, 16, 24]
    assert details["finished"] == 1 and details["aborted"] == 5
    assert details["partial_scores"] == "reward call"  # the fake engine has no tap
    assert body["choices"][0]["text"].startswith("#a")
    assert all(len(t) == 8 for t in reward.seen[0])  # cut at the decision point
    assert engine.aborted == 5
    aborted = [c for c in body["winnow"]["candidates"] if c.get("aborted_at")]
    assert sorted(c["text"][:2] for c in aborted) == ["#b", "#c", "#d", "#e", "#f"]
    usage = body["usage"]["winnow"]
    full = sum(len(t) + 1 for t in texts())
    assert usage["generated_tokens"] < full * 0.6  # the aborted ones stopped early
    assert usage["reward_calls"] == 4  # three decisions and the final score


def test_a_late_first_decision_aborts_every_long_run():
    # c and e finish (6 characters) before the first decision at 12 tokens; the four long runs,
    # a included, are all aborted there, so the best of the finished ones (c) is returned
    short = {"c", "e"}
    script = [f"#{t}. 42" if t in short else f"#{t}{PAD} 42." for t in "dafbec"]
    body, engine, reward = run(
        {"n": 6, "first_decision": 12, "interval": 4, "rejection_rate": 1.0}, script=script
    )
    details = body["winnow"]["details"]
    assert details["decisions"] == [{"tokens": 12, "running": 4, "aborted": 4}]
    assert details["finished"] == 2 and engine.aborted == 4
    assert body["choices"][0]["text"] == "#c. 42"
    assert all(len(t) == 12 for t in reward.seen[0])


def test_rejecting_all_keeps_the_clients_n_when_too_few_finished():
    body, _, _ = run({"n": 6, "first_decision": 4, "rejection_rate": 1.0}, n=2)
    details = body["winnow"]["details"]
    assert details["decisions"] == [{"tokens": 4, "running": 6, "aborted": 4}]
    assert [c["text"][:2] for c in body["choices"]] == ["#a", "#b"]  # best partial scores


def test_never_fewer_candidates_than_the_client_asks_for():
    body, engine, _ = run({"n": 4, "interval": 8, "rejection_rate": 0.5}, n=3)
    details = body["winnow"]["details"]
    assert details["finished"] == 3 and engine.aborted == 1  # f (candidates d, a, f, b)
    assert [c["text"][:2] for c in body["choices"]] == ["#a", "#b", "#d"]


def test_process_reward_and_bad_parameters_are_400():
    reward = LeadingTag()
    reward._info = RewardInfo("lead", "process", "test", "probability in [0, 1]")
    app = create_app(Settings(max_n=16), FakeEngine(), RewardSet({"lead": reward}))
    with TestClient(app) as client:
        for strategy, param in (
            ({"reward": "lead"}, "strategy.reward"),
            ({"reward": "lead", "rejection_rate": 1.5}, "strategy.rejection_rate"),
            ({"reward": "lead", "first_decision": 0}, "strategy.first_decision"),
            ({"reward": "lead", "n": 2}, "n"),
        ):
            r = client.post(
                "/v1/completions",
                json={"prompt": "q", "max_tokens": 20, "n": 3, "temperature": 1.0,
                      "strategy": {"name": "speculative_rejection", **strategy}},
            )  # fmt: skip
            assert r.status_code == 400, r.text
            assert param in r.json()["error"]["param"], r.json()
        listed = client.get("/v1/strategies").json()
        assert "speculative_rejection" in {s["name"] for s in listed["data"]}

"""`GET/POST /v1/rewards` on the fake engine with the rule-based verifier and a composite."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient

from tests.support.selection import TaggedReward
from winnow.engine.fake import FakeEngine
from winnow.rewards.base import (
    ChatPrompt,
    OutcomeItem,
    ProcessItem,
    Reward,
    RewardInfo,
    Scored,
    StepScored,
    prompt_messages,
)
from winnow.rewards.configs import CompositeConfig, ProbeConfig, RewardConfigError, VerifierConfig
from winnow.rewards.registry import build_rewards
from winnow.server.app import create_app
from winnow.settings import Settings


@pytest.fixture
def client():
    rewards = build_rewards([VerifierConfig(name="verifier")], default_model_dir=None)
    rewards.add(TaggedReward("tagged"))
    rewards.add(TaggedReward("steps", kind="process"))
    with TestClient(create_app(Settings(), FakeEngine(), rewards)) as c:
        yield c


def test_lists_rewards_with_kind_and_scale(client):
    data = {r["name"]: r for r in client.get("/v1/rewards").json()["data"]}
    assert set(data) == {"verifier", "tagged", "steps"}
    assert data["verifier"]["kind"] == "outcome"
    assert data["verifier"]["backend"] == "verifier"
    assert "reference" in data["verifier"]["scale"]
    assert data["steps"]["kind"] == "process"


def test_verifier_scores_against_references(client):
    r = client.post(
        "/v1/rewards",
        json={
            "reward": "verifier",
            "items": [
                {"prompt": "2+2?", "response": "It is 4. The answer is 4.", "reference": "4"},
                {"prompt": "2+2?", "response": "The answer is 5.", "reference": "4"},
                {"messages": [{"role": "user", "content": "half?"}], "response": "\\boxed{1/2}",
                 "reference": "0.5"},
            ],
        },
    )  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert [d["score"] for d in body["data"]] == [1.0, 0.0, 1.0]
    assert body["usage"] == {"reward_calls": 1, "reward_tokens": 0, "reward_cached_tokens": 0}


def test_verifier_without_reference_is_400(client):
    r = client.post(
        "/v1/rewards", json={"reward": "verifier", "items": [{"prompt": "q", "response": "1"}]}
    )
    assert r.status_code == 400
    assert "reference" in r.json()["error"]["message"]


def test_process_reward_scores_steps_and_partial_steps(client):
    r = client.post(
        "/v1/rewards",
        json={
            "reward": "steps",
            "items": [
                {"prompt": "q", "steps": ["a #ninety\n\n", "b #ten\n\n"]},
                {"prompt": "q", "steps": ["a #fifty"], "partial": True},
            ],
        },
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data[0]["step_scores"] == [0.9, 0.1]
    assert data[0]["score"] == 0.1
    assert data[1]["step_scores"] == [0.5]


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"reward": "nope", "items": [{"prompt": "q", "response": "r"}]}, 400, "unknown_reward"),
        ({"reward": "tagged", "items": [{"prompt": "q", "steps": ["a"]}]}, 400, None),
        ({"reward": "tagged", "items": [{"response": "r"}]}, 400, None),
        ({"reward": "tagged", "items": []}, 400, "invalid_value"),
        ({"reward": {"tagged": 1, "ghost": 2}, "items": [{"prompt": "q", "response": "r"}]},
         400, "unknown_reward"),
    ],
)  # fmt: skip
def test_bad_reward_requests(client, payload, status, code):
    r = client.post("/v1/rewards", json=payload)
    assert r.status_code == status, r.text
    if code:
        assert r.json()["error"]["code"] == code
    if code == "unknown_reward":
        assert "verifier" in r.json()["error"]["message"]


def test_weighted_rewards_per_request(client):
    r = client.post(
        "/v1/rewards",
        json={
            "reward": {"tagged": 2.0, "verifier": 1.0},
            "items": [{"prompt": "q", "response": "The answer is 3. #fifty", "reference": "3"}],
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["score"] == pytest.approx(2.0)  # 2 * 0.5 + 1 * 1.0


def test_misconfigured_rewards_fail_at_start_up(tmp_path):
    with pytest.raises(RewardConfigError, match="nothing-here"):
        build_rewards([ProbeConfig(name="p", path=str(tmp_path / "nothing-here"))],
                      default_model_dir="x")  # fmt: skip
    with pytest.raises(RewardConfigError, match="ghost"):
        build_rewards(
            [VerifierConfig(name="v"), CompositeConfig(name="c", weights={"ghost": 1.0})],
            default_model_dir=None,
        )


class Recording(Reward):
    """Keeps every item it is asked to score (scores 0.5)."""

    def __init__(self, name: str, kind: str = "outcome") -> None:
        self._info = RewardInfo(name, kind, "test", "probability in [0, 1]")  # type: ignore[arg-type]
        self.items: list[OutcomeItem | ProcessItem] = []

    @property
    def info(self) -> RewardInfo:
        return self._info

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        if self.info.kind == "process":
            return await super().score(items)
        self.items += items
        return Scored([0.5] * len(items))

    async def score_steps(self, items: Sequence[ProcessItem]) -> StepScored:
        self.items += items
        return StepScored([[0.5] * len(i.steps) for i in items])


MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 2?"},
]
POLICY_TEXT = "<system>Be brief.<user>What is 2 + 2?<assistant>"  # the fake engine's template


def test_reward_items_carry_the_requests_messages():
    """Reward models render the messages in their own format (tests/test_reward_backends.py);
    the probes read the policy's rendered text: an item's prompt is both."""
    outcome, process = Recording("rec"), Recording("rec_steps", kind="process")
    rewards = build_rewards([], default_model_dir=None)
    rewards.add(outcome)
    rewards.add(process)
    with TestClient(create_app(Settings(), FakeEngine(), rewards)) as c:
        for reward, extra in (("rec", {"response": "4"}), ("rec_steps", {"steps": ["4"]})):
            items = [{"messages": MESSAGES, **extra}, {"prompt": "2 + 2 =", **extra}]
            r = c.post("/v1/rewards", json={"reward": reward, "items": items})
            assert r.status_code == 200, r.text
    for recorded in (outcome, process):
        chat, plain = recorded.items
        assert str(chat.prompt) == POLICY_TEXT and prompt_messages(chat.prompt) == MESSAGES
        assert not isinstance(plain.prompt, ChatPrompt) and plain.prompt == "2 + 2 ="
        assert prompt_messages(plain.prompt) == [{"role": "user", "content": "2 + 2 ="}]


@pytest.mark.parametrize(
    ("strategy", "kind"),
    [({"name": "best_of_n", "n": 2, "reward": "rec"}, "outcome"),
     ({"name": "tree_search", "n": 2, "beam_width": 2, "max_depth": 2, "reward": "rec"},
      "process")],
)  # fmt: skip
def test_strategies_hand_the_chat_messages_to_rewards(strategy, kind):
    reward = Recording("rec", kind=kind)
    rewards = build_rewards([], default_model_dir=None)
    rewards.add(reward)
    engine = FakeEngine(lambda prompt, i, spec: f"Two and two.\n\nThe answer is {4 + i}.")
    with TestClient(create_app(Settings(), engine, rewards)) as c:
        r = c.post(
            "/v1/chat/completions",
            json={"messages": MESSAGES, "max_tokens": 32, "strategy": strategy},
        )
    assert r.status_code == 200, r.text
    assert reward.items
    for item in reward.items:
        assert str(item.prompt) == POLICY_TEXT and prompt_messages(item.prompt) == MESSAGES

"""`GET/POST /v1/rewards` on the fake engine with the rule-based verifier and a composite."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.test_selection_strategies import TaggedReward
from winnow.engine.fake import FakeEngine
from winnow.rewards.registry import (
    CompositeConfig,
    ProbeConfig,
    RewardConfigError,
    VerifierConfig,
    build_rewards,
)
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

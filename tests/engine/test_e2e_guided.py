"""Guided strategies and the trained default rewards end to end: real engine, real HTTP, SDK."""

from __future__ import annotations

import httpx
import openai
import pytest

pytestmark = pytest.mark.engine

QUESTION = [
    {"role": "user", "content": "Calculate 7 * 8. Give the final answer as a single number."}
]


@pytest.fixture(scope="module")
def client(live_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.base_url, api_key=live_server.api_key, max_retries=0)


@pytest.fixture(scope="module")
def http(live_server) -> httpx.Client:
    headers = {"Authorization": f"Bearer {live_server.api_key}"}
    with httpx.Client(base_url=live_server.base_url, headers=headers, timeout=300) as c:
        yield c


def test_default_rewards_are_listed(http):
    data = {r["name"]: r for r in http.get("/rewards").json()["data"]}
    assert data["default"]["kind"] == "outcome"
    assert data["default_prm"]["kind"] == "process"
    assert data["verifier"]["backend"] == "verifier"
    metrics = data["default"]["extra"]["metrics"]
    assert metrics["heldout_within_auc"] > 0.5  # ranks answers to one question better than chance
    assert data["default"]["extra"]["calibration"]["r_star"] > 0.0


def test_trained_reward_prefers_the_right_answer(http):
    items = [
        {"messages": QUESTION, "response": f"7 * 8 = {x}. The answer is {x}."}
        for x in (56, 54, 65, 56)
    ]
    r = http.post("/rewards", json={"reward": "default", "items": items})
    assert r.status_code == 200, r.text
    scores = [d["score"] for d in r.json()["data"]]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] == pytest.approx(scores[3])  # deterministic, batch-independent
    assert r.json()["usage"]["reward_tokens"] > 0


def test_process_reward_scores_steps(http):
    steps = ["7 * 8 means 7 added 8 times.\n\n", "7 * 8 = 56.\n\n", "The answer is 56."]
    r = http.post(
        "/rewards",
        json={"reward": "default_prm", "items": [{"messages": QUESTION, "steps": steps},
                                                  {"messages": QUESTION, "steps": steps[:1],
                                                   "partial": True}]},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    first, partial = r.json()["data"]
    assert len(first["step_scores"]) == 3
    assert len(partial["step_scores"]) == 1
    assert all(0.0 <= s <= 1.0 for s in first["step_scores"])


def test_best_of_n_through_the_sdk(client):
    r = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=QUESTION,
        max_tokens=48,
        temperature=0.8,
        seed=1,
        extra_body={
            "strategy": {"name": "best_of_n", "n": 4, "reward": "default",
                         "return_candidates": True},
        },
    )  # fmt: skip
    assert len(r.choices) == 1
    extension = r.usage.model_extra["winnow"]
    assert extension["engine_calls"] == 1
    assert extension["reward_calls"] == 1
    assert extension["reward_tokens"] > 0
    assert extension["generated_tokens"] >= r.usage.completion_tokens
    assert (
        extension["discarded_tokens"] == extension["generated_tokens"] - r.usage.completion_tokens
    )
    candidates = r.model_extra["winnow"]["candidates"]
    assert len(candidates) == 4
    best = max(candidates, key=lambda c: (c["score"], -c["index"]))
    assert best["chosen"]
    assert r.choices[0].message.content == best["text"]


def test_best_of_majority_with_the_verifier(client):
    r = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=QUESTION,
        max_tokens=48,
        temperature=0.8,
        seed=2,
        extra_body={
            "strategy": {"name": "best_of_majority", "n": 6, "k": 2, "reward": "verifier",
                         "reference": "56", "return_candidates": True},
        },
    )  # fmt: skip
    candidates = r.model_extra["winnow"]["candidates"]
    assert len(candidates) == 6
    assert 0 <= len(r.choices) <= 2
    details = r.model_extra["winnow"]["details"]
    right = [c for c in candidates if c["score"] == 1.0]
    if len(right) >= details["min_group_size"]:  # its group passes the frequency filter, and
        # its mean verifier score 1.0 puts it first
        assert r.choices[0].message.content in {c["text"] for c in right}
    assert len(r.choices) >= 1  # never no choice


def test_streaming_best_of_n_sends_the_choice_once(client):
    stream = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=QUESTION,
        max_tokens=32,
        temperature=0.8,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"strategy": {"name": "best_of_n", "n": 3, "reward": "default"}},
    )
    chunks = list(stream)
    content = [c for c in chunks if c.choices]
    assert len(content) == 1  # the chosen answer, whole, as soon as it is chosen
    assert content[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.model_extra["winnow"]["reward_calls"] == 1

"""tree_search (engine): end to end on the real engine through HTTP (marker `engine`)."""

from __future__ import annotations

import httpx
import openai
import pytest

# ---- the real engine, through HTTP ------------------------------------------------------------

QUESTION = [
    {"role": "user", "content": "Calculate 7 * 8. Give the final answer as a single number."}
]


@pytest.fixture(scope="module")
def sdk(live_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.base_url, api_key=live_server.api_key, max_retries=0)


@pytest.mark.engine
@pytest.mark.parametrize(
    "strategy",
    [
        {"mode": "beam"},
        {"mode": "dvts"},
        {"mode": "beam", "partial_tokens": 4},
    ],
    ids=["beam", "dvts", "early_rejection"],
)
def test_real_engine_end_to_end(sdk, live_server, strategy):
    r = sdk.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=QUESTION,
        max_tokens=24,
        temperature=0.8,
        seed=3,
        extra_body={"strategy": {"name": "tree_search", "n": 4, "beam_width": 2,
                                 "step_tokens": 12, "return_candidates": True, **strategy}},
    )  # fmt: skip
    assert len(r.choices) == 1 and r.choices[0].message.content
    extra = r.model_extra["winnow"]
    details = extra["details"]
    winnow = r.usage.model_extra["winnow"]
    assert details["expansions"] >= 4 and details["rounds"] >= 1
    assert winnow["reward_calls"] >= details["rounds"]
    assert winnow["reward_tapped"] > 0  # the PRM's step scores came from the engine's states
    assert winnow["generated_tokens"] >= sum(
        c["tokens"] for c in extra["candidates"] if c["chosen"]
    )
    chosen = [c for c in extra["candidates"] if c["chosen"]]
    assert chosen[0]["text"] == r.choices[0].message.content
    assert all(c["tokens"] <= 24 for c in extra["candidates"])
    if strategy.get("partial_tokens"):  # steps of this model are longer than 4 tokens
        assert details["continuations"] >= 1 and details["pruned"] >= 1
    assert live_server.wait_idle() == 0


@pytest.mark.engine
def test_real_engine_cancel_mid_search_leaves_nothing_running(live_server):
    headers = {"Authorization": f"Bearer {live_server.api_key}"}
    payload = {
        "messages": QUESTION,
        "max_tokens": 200,
        "temperature": 0.8,
        "strategy": {"name": "tree_search", "n": 4, "beam_width": 2, "step_tokens": 200,
                     "delimiter": "\n\n\n\n\n"},
    }  # fmt: skip
    with (
        httpx.Client(base_url=live_server.base_url, headers=headers) as http,
        pytest.raises(httpx.ReadTimeout),
    ):
        http.post("/chat/completions", json=payload, timeout=1.5)
    assert live_server.wait_idle() == 0

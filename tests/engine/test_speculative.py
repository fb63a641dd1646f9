"""speculative_rejection (engine): through HTTP on the real engine (marker ``engine``), where the
tap gives the partial scores."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.engine
def test_served_with_partial_scores_from_the_engine(live_server):
    headers = {"Authorization": f"Bearer {live_server.api_key}"}
    body = {
        "model": live_server.engine.info.name,
        "prompt": "Question: What is 9 + 8? Think step by step.\nAnswer:",
        "max_tokens": 64, "temperature": 0.8, "seed": 2,
        "strategy": {"name": "speculative_rejection", "n": 8, "interval": 8},
    }  # fmt: skip
    r = httpx.post(f"{live_server.base_url}/completions", json=body, headers=headers, timeout=300)
    assert r.status_code == 200, r.text
    out = r.json()
    details, usage = out["winnow"]["details"], out["usage"]["winnow"]
    assert details["partial_scores"] == "engine tap"
    assert details["aborted"] >= 1 and details["decisions"]  # some may finish before a decision
    assert usage["reward_tapped"] >= 8  # every partial score, and the finals the tap covers
    assert usage["generated_tokens"] < 8 * 64
    assert live_server.wait_idle() == 0

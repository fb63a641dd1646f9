"""Issue 28 end to end on the real engine: a hostile reference, given to /v1/rewards or to a
strategy, never stalls the server. While each request is in flight, /health is polled every
100 ms; every poll must be answered within a second, and the request must get its answer or a
400.

The strings are the issue's: a fraction of long digit runs followed by a letter, which took
Python's ``re`` seconds per match (the GIL held throughout: in a thread as on the event loop).
/health is polled from another process (:mod:`tests.health_polls`): a stall that holds the GIL
freezes a polling thread of the server's process as well, and it would see nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.health_polls import HealthPolls
from winnow.protocol.requests import MAX_REFERENCE_CHARS

pytestmark = pytest.mark.timeout(600)


def hostile(numerator: int, denominator: int) -> str:
    """The issue's shape. Each test has its own string of 1000 characters (answers are cached:
    a string read once is read at once the next time, and would hide a stall; past 1000
    characters an answer is refused before any expression reads it)."""
    return "1" * numerator + "/" + "1" * denominator + "x"


ADVERSARIAL = hostile(333, 665)  # the issue's: 1000 characters, under the reference cap
LONGER = hostile(1300, 2600)[:MAX_REFERENCE_CHARS]  # 3902: under the cap too
OVER_THE_CAP = hostile(1400, 2800)  # 4202 characters


def _during(live_server: Any, send: Callable[[httpx.Client], httpx.Response]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {live_server.api_key}"}
    with (
        httpx.Client(base_url=live_server.base_url, headers=headers, timeout=300) as http,
        HealthPolls(live_server.base_url) as polls,
    ):
        response = send(http)
    polls.assert_responsive()
    return response


def _answer_or_400(r: httpx.Response, *params: str) -> None:
    """200, or a 400 that names the reference (or the reward that could not read it)."""
    assert r.status_code in (200, 400), r.text
    if r.status_code == 400:
        assert r.json()["error"]["param"].startswith(params), r.text


def _reward_items(response: str, reference: str) -> dict[str, Any]:
    item = {"prompt": "What is the answer?", "response": response, "reference": reference}
    return {"reward": "verifier", "items": [item] * 8}


def test_live_server_has_the_verifier(live_server):
    assert "verifier" in live_server.rewards.names()


@pytest.mark.parametrize(
    ("response", "reference"),
    [(ADVERSARIAL, ADVERSARIAL), (LONGER, LONGER)],
    ids=["issue", "longer"],
)
def test_hostile_reward_items_do_not_stall_health(live_server, response, reference):
    body = _reward_items(response, reference)
    r = _during(live_server, lambda http: http.post("/rewards", json=body))
    _answer_or_400(r, "items", "reward")
    if r.status_code == 200:
        assert [d["index"] for d in r.json()["data"]] == list(range(8))


def test_a_reference_over_the_cap_is_a_400_at_once(live_server):
    assert len(OVER_THE_CAP) > MAX_REFERENCE_CHARS
    body = _reward_items(ADVERSARIAL, OVER_THE_CAP)
    r = _during(live_server, lambda http: http.post("/rewards", json=body))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "items.0.reference"


@pytest.mark.parametrize(
    ("reward", "reference"),
    [
        ("default", hostile(332, 666)),
        ("verifier", hostile(331, 667)),
        ("default", hostile(1301, 2600)),
        ("verifier", hostile(1302, 2600)),
    ],
    ids=["issue-default", "issue-verifier", "longer-default", "longer-verifier"],
)
def test_a_hostile_strategy_reference_does_not_stall_health(live_server, reward, reference):
    """``default``: only the server's check of the reference reads it (after admission, in a
    worker process); ``verifier``: the reward reads it too, when it scores the candidates."""
    assert len(reference) <= MAX_REFERENCE_CHARS
    strategy = {"name": "best_of_n", "n": 2, "reward": reward, "reference": reference}
    body = {
        "messages": [{"role": "user", "content": "What is 1 + 1?"}],
        "max_tokens": 8,
        "temperature": 0.7,
        "strategy": strategy,
    }
    r = _during(live_server, lambda http: http.post("/chat/completions", json=body))
    _answer_or_400(r, "strategy.reference", "reward")

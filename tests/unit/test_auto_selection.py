"""best_of_n's default selection, ``auto``: the reward's best-scored answer while the question is
in the reward's domain, the majority vote outside it, on the fake engine with a scripted reward
that says where it applies."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient

from tests.support.selection import TaggedReward
from winnow.engine.fake import FakeEngine, cycle_script
from winnow.heads.domain import DomainVerdict
from winnow.rewards.base import Tapped
from winnow.rewards.registry import RewardSet
from winnow.server.app import create_app
from winnow.settings import Settings

# the best-scored answer (5) is a minority; the majority says 7
TEXTS = ["The answer is 5. #ninety", "The answer is 7. #ten", "The answer is 7. #twenty"]


class DomainReward(TaggedReward):
    """TaggedReward that places every prompt in or out of its domain (None: it cannot say)."""

    def __init__(self, in_domain: bool | None) -> None:
        super().__init__("tagged")
        self.in_domain = in_domain

    async def domain_of(
        self, prompts: Sequence[str], tapped: Sequence[Tapped | None] | None = None
    ) -> tuple[list[DomainVerdict] | None, int]:
        if self.in_domain is None:
            return None, 0
        distance = 0.5 if self.in_domain else 9.0
        return [DomainVerdict(distance=distance, threshold=1.0, in_domain=self.in_domain)
                for _ in prompts], 7  # fmt: skip


def ask(in_domain: bool | None, **strategy) -> dict:
    app = create_app(
        Settings(max_n=8),
        FakeEngine(cycle_script(TEXTS)),
        RewardSet({"tagged": DomainReward(in_domain)}),
    )
    with TestClient(app) as c:
        r = c.post("/v1/completions", json={
            "prompt": "q", "max_tokens": 50,
            "strategy": {"name": "best_of_n", "n": 3, "reward": "tagged", **strategy},
        })  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize(
    ("in_domain", "answer", "by"),
    [(True, "5", "best"), (None, "5", "best"), (False, "7", "majority")],
)
def test_auto_trusts_the_reward_only_inside_its_domain(in_domain, answer, by) -> None:
    body = ask(in_domain)
    assert body["choices"][0]["text"].startswith(f"The answer is {answer}.")
    details = body["winnow"]["details"]
    assert details["selection"] == "auto" and details["selected_by"] == by
    if in_domain is None:
        assert details["domain"] is None
    else:
        assert details["domain"]["in_domain"] is in_domain
        assert body["usage"]["winnow"]["reward_tokens"] >= 7  # the verdict's encoding is counted


def test_an_explicit_selection_is_kept_out_of_domain() -> None:
    body = ask(False, selection="best")
    assert body["choices"][0]["text"].startswith("The answer is 5.")
    assert "selected_by" not in body["winnow"]["details"]

"""Scripted rewards and candidates for the selection strategies (from
tests/unit/test_selection_strategies.py, also used by the adaptive, rewards API, trace and
playground tests): :class:`TaggedReward` scores a text by its "#word" tag, :class:`LogitReward`
the same on a logit scale, :func:`client_for` an app on a fake engine that writes CANDIDATES in
turn."""

from __future__ import annotations

import math
from collections.abc import Sequence

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
        scale = "probability in [0, 1]: the #tag"
        self._info = RewardInfo(name, kind, "test", scale)  # type: ignore[arg-type]
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


LOGITS = {"minusone": -1.0, "minustwo": -2.0, "minushalf": -0.5, "minusthree": -3.0,
          "plusone": 1.0, "unscored": math.nan}  # fmt: skip


class LogitReward(TaggedReward):
    """Like :class:`TaggedReward` with the tags above, on a logit scale (as ``seq_cls`` scores)."""

    def __init__(self, name: str = "logit", kind: str = "outcome") -> None:
        super().__init__(name, kind)
        self._info = RewardInfo(name, kind, "test", "raw logit (higher is better)")  # type: ignore[arg-type]

    @staticmethod
    def _tag(text: str) -> float:
        return LOGITS[text.rsplit("#", 1)[-1].strip()]

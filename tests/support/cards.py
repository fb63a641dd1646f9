"""A scripted reward and runner for CARDS (from tests/unit/test_cards.py, also used by the trace
tests): :class:`LastWordReward` scores a prefix by its last tag word, :func:`run` sends one cards
request to an app on a fake engine that writes the given texts in turn."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from fastapi.testclient import TestClient

from winnow.engine.fake import FakeEngine, Script
from winnow.rewards.base import OutcomeItem, Reward, RewardInfo, Scored
from winnow.rewards.registry import RewardSet
from winnow.server.app import create_app
from winnow.settings import Settings

WORDS = {"good": 0.9, "meh": 0.3, "bad": 0.1}


class LastWordReward(Reward):
    """Scores a prefix by the last tag word in it (good/meh/bad); 0 without one."""

    def __init__(self, name: str = "words", r_star: float | None = 0.8) -> None:
        extra = {"calibration": {"r_star": r_star}} if r_star is not None else {}
        self._info = RewardInfo(name, "outcome", "test", "tag", extra=extra)
        self.seen: list[str] = []

    @property
    def info(self) -> RewardInfo:
        return self._info

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        out = []
        for i in items:
            self.seen.append(i.response)
            tags = [w for w in i.response.replace("¦", " ").split() if w in WORDS]
            out.append(WORDS[tags[-1]] if tags else 0.0)
        return Scored(out, tokens=len(items))


def queue(texts: Sequence[str]) -> Script:
    """Each engine call writes the next text of the list (then the last one again)."""
    it: Iterator[str] = iter(texts)
    last = [texts[-1]]

    def script(prompt: str, index: int, spec: object) -> str:
        last[0] = next(it, last[0])
        return last[0]

    return script


def run(texts: Sequence[str], strategy: dict, reward: Reward | None = None, **body) -> tuple:
    reward = reward or LastWordReward()
    engine = FakeEngine(queue(texts))
    app = create_app(Settings(max_n=8), engine, RewardSet({reward.info.name: reward}))
    payload = {"prompt": "Q:", "max_tokens": 40, "seed": 1, **body}
    payload["strategy"] = {"name": "cards", "reward": reward.info.name, **strategy}
    with TestClient(app) as client:
        r = client.post("/v1/completions", json=payload)
    return r, engine, reward

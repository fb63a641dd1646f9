"""The playground's fake-engine server: scripted rewards named like the real ones ("default",
"default_prm") and a fake engine that writes, per strategy, texts those rewards score: candidates
for best_of_n and friends, segments for cards, :data:`tests.support.tree.BEAM`'s steps for
tree_search. Served by tests/unit/test_playground.py (the page) and tests/engine/test_playground.py
(the page in a browser).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tests.support.selection import CANDIDATES
from tests.support.serving import serve_in_thread
from tests.support.tree import BEAM, StepTags, scripted
from winnow.engine.base import SamplingSpec
from winnow.engine.fake import FakeEngine
from winnow.rewards.base import OutcomeItem, Reward, RewardInfo, Scored
from winnow.rewards.registry import RewardSet
from winnow.server.app import create_app
from winnow.settings import Settings

WORDS = {"ninety": 0.9, "forty": 0.4, "fortyfive": 0.45, "thirty": 0.3, "ninetyfive": 0.95,
         "ten": 0.1, "good": 0.9, "meh": 0.3, "bad": 0.1}  # fmt: skip
SEGMENTS = ["Add them: bad¦ x", "17 + 25 good¦ x", "so 42, meh¦ x", "that is 42 good¦ x",
            "The answer is 42. good"]  # fmt: skip


class WordReward(Reward):
    """Outcome reward "default": the last tag word's probability (obviously fake)."""

    def __init__(self) -> None:
        calibration = {"r_star": 0.8, "r_star_log_odds": math.log(0.8 / 0.2)}
        self._info = RewardInfo(
            "default", "outcome", "test", "probability in [0, 1]: the last tag word",
            extra={"calibration": calibration},
        )  # fmt: skip

    @property
    def info(self) -> RewardInfo:
        return self._info

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        out = []
        for item in items:
            words = [w.strip(".#,¦") for w in item.response.replace("#", " ").split()]
            tags = [WORDS[w] for w in words if w in WORDS]
            out.append(tags[-1] if tags else 0.5)
        return Scored(out, tokens=len(items))


def script() -> Any:
    tree = scripted(BEAM)
    calls = [0]

    def write(prompt: str, index: int, spec: SamplingSpec) -> str:
        if spec.segment is not None:  # cards: segments in turn, the last one ends the answer
            calls[0] += 1
            return SEGMENTS[(calls[0] - 1) % len(SEGMENTS)]
        if "\n\n" in spec.stop:  # tree search: BEAM's steps by depth
            return tree(prompt, index, spec)
        return CANDIDATES[index % len(CANDIDATES)]

    return write


@contextmanager
def serve_playground() -> Iterator[tuple[str, str]]:
    """The server's root URL (no /v1) and its API key, while the block runs."""
    rewards = RewardSet({"default": WordReward(), "default_prm": StepTags("default_prm")})
    engine = FakeEngine(script(), delay=0.01)
    app = create_app(Settings(api_key="fake-key", request_timeout=30, max_n=16), engine, rewards)
    with serve_in_thread(app, engine=engine, rewards=rewards, api_key="fake-key") as server:
        yield server.base_url.removesuffix("/v1"), server.api_key

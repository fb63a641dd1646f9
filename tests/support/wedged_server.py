"""``python -m tests.wedged_server PORT MODE``: `winnow serve`'s runner (run_app) on the fake
engine, with a reward ``wedged`` whose calls block a thread forever (tests/test_hostile_answers.py
sends SIGTERM / SIGINT to it and times the exit).

MODE ``shutdown``: the reward's shutdown waits for its wedged thread (a hook that never returns);
``thread``: each call also leaves a non-daemon thread that never ends.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Sequence

from winnow.engine.fake import FakeEngine
from winnow.rewards.base import OutcomeItem, Reward, RewardInfo, Scored
from winnow.rewards.fake import fake_rewards
from winnow.rewards.registry import RewardSet
from winnow.server.app import create_app
from winnow.server.run import run_app
from winnow.settings import Settings

SHUTDOWN_TIMEOUT = 2.0


class Wedged(Reward):
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._info = RewardInfo("wedged", "outcome", "test", "never answers")

    @property
    def info(self) -> RewardInfo:
        return self._info

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        if self.mode == "thread":
            threading.Thread(target=threading.Event().wait, name="wedged-thread").start()
        await asyncio.to_thread(threading.Event().wait)  # a forward pass that never returns
        return Scored([0.0] * len(items), 0)

    async def shutdown(self) -> None:
        if self.mode == "shutdown":
            await asyncio.to_thread(threading.Event().wait)  # joins the wedged pass: forever


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    settings = Settings(shutdown_timeout=SHUTDOWN_TIMEOUT, port=port, log_level="warning")
    rewards = RewardSet({**fake_rewards(), "wedged": Wedged(mode)})
    run_app(create_app(settings, FakeEngine(), rewards), settings)


if __name__ == "__main__":
    main()

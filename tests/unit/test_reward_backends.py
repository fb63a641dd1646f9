"""The reward backends (unit): the judge's configuration and scores with a scripted engine.

The Hugging Face backends on tiny real models, and the judge on the real engine:
tests/engine/test_reward_backends.py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from winnow.engine.base import Completion, Generation, SamplingSpec, TokenLogprob
from winnow.engine.fake import FakeEngine
from winnow.rewards.base import OutcomeItem
from winnow.rewards.configs import JudgeConfig, RewardConfigError
from winnow.rewards.judge import DEFAULT_TEMPLATE, JudgeReward, yes_probability
from winnow.rewards.registry import build_rewards

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# ---- configuration errors -----------------------------------------------------------------------


def test_judge_config_errors():
    with pytest.raises(RewardConfigError, match="needs the policy engine"):
        build_rewards([JudgeConfig(name="j")], default_model_dir=None)
    for template in ("Is {answer} right?", "{question} {answer} {extra}", "{question} {answer"):
        with pytest.raises(RewardConfigError, match="'j'"):
            JudgeReward(JudgeConfig(name="j", template=template), FakeEngine())


# ---- judge --------------------------------------------------------------------------------------


def test_yes_probability():
    assert yes_probability([(1, " Yes", -0.1), (2, "Maybe", -1.0)]) == 1.0
    assert yes_probability([(2, "Maybe", -1.0)]) == 0.5
    assert yes_probability([(1, " Yes", -1.0), (3, "No", -1.0), (1, " Yes", -1.0)]) == 0.5
    expected = (math.exp(-1) + math.exp(-2)) / (math.exp(-1) + math.exp(-2) + math.exp(-1.5))
    got = yes_probability([(1, " Yes", -1.0), (4, "yes", -2.0), (5, " no", -1.5)])
    assert got == pytest.approx(expected)
    assert yes_probability([(1, "Yes", float("-inf")), (3, "No", -3.0)]) == 0.0


class ScriptedJudgeEngine(FakeEngine):
    """Answers every verdict prompt with fixed first-token logprobs."""

    def __init__(self, top: tuple[tuple[int, str, float], ...]) -> None:
        super().__init__(delay=0.01)
        self.top = top
        self.concurrent = 0
        self.peak = 0

    async def generate(self, spec: SamplingSpec) -> Generation:
        self.calls.append(spec)
        self.concurrent += 1
        self.peak = max(self.peak, self.concurrent)
        await asyncio.sleep(self.delay)
        self.concurrent -= 1
        tid, text, logprob = self.top[0]
        logprobs = [TokenLogprob(tid, text, logprob, self.top)]
        prompt_ids = await self.tokenize(str(spec.prompt))
        return Generation(prompt_ids, [Completion(0, text, [tid], "length", None, logprobs)])


def test_judge_prompts_and_scores_with_a_scripted_engine():
    engine = ScriptedJudgeEngine(((1, " Yes", math.log(0.6)), (2, " No", math.log(0.2))))
    judge = JudgeReward(JudgeConfig(name="j"), engine)
    items = [OutcomeItem(f"<user>question {i}", f"answer {i}") for i in range(3)]
    scored = run(judge.score(items))
    assert scored.scores == pytest.approx([0.75] * 3)
    assert engine.peak == 3  # all items in flight at once
    for i, spec in enumerate(engine.calls):
        assert (spec.max_tokens, spec.temperature, spec.logprobs) == (1, 0.0, 20)
        content = DEFAULT_TEMPLATE.format(question=items[i].prompt, answer=items[i].response)
        assert spec.prompt == f"<user>{content}<assistant>"
    assert scored.tokens == sum(len(str(s.prompt)) for s in engine.calls)
    assert judge.info.kind == "outcome"

"""Monte-Carlo step labels (Math-Shepherd, Wang et al. 2024): the raw material of the PRM.

A step of a solution is worth what the solutions that continue from it are worth: from the prefix
ending with step j, the policy writes ``k`` completions, and the step's value is the fraction of
them that reach the gold answer. The last step's value is the solution's own verdict.

Solutions are the policy's own multi-step answers (``winnow train samples`` journal, or the
benchmark's stored answers for a held-out evaluation), cut into steps the way tree search writes
them (each step ends with the step delimiter). One JSON line per question holds its solutions,
their steps and the rollouts' texts; values are recomputed from the texts when the journal is read
(as the samples journal does with labels), so a fix of the answer checker relabels old rollouts.
Lines are appended as questions finish, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from winnow.rewards.base import split_steps
from winnow.train.datasets import DATA
from winnow.train.samples import Journal, QuestionSamples, is_right, read_records
from winnow.train.tasks import messages, split_of

STEP_JOURNAL = DATA / "step_rollouts.jsonl"
BENCH_STEP_JOURNAL = DATA / "step_rollouts_bench.jsonl"


@dataclass(slots=True)
class StepSolution:
    steps: list[str]
    rollouts: list[list[str]] = field(default_factory=list)  # per intermediate prefix: k texts

    def values(self, gold: str) -> list[float]:
        """One value per step: the rollouts' success rate from each intermediate prefix, then the
        solution's own verdict."""
        out = []
        for j, texts in enumerate(self.rollouts):
            prefix = "".join(self.steps[: j + 1])
            out.append(sum(is_right(prefix + t, gold) for t in texts) / max(len(texts), 1))
        out.append(float(is_right("".join(self.steps), gold)))
        return out


@dataclass(slots=True)
class QuestionSteps:
    task: str
    question: str
    gold: str
    prompt: str
    solutions: list[StepSolution]

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "question": self.question,
            "gold": self.gold,
            "prompt": self.prompt,
            "solutions": [{"steps": s.steps, "rollouts": s.rollouts} for s in self.solutions],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QuestionSteps:
        sols = [StepSolution(list(s["steps"]), [list(r) for r in s["rollouts"]])
                for s in data["solutions"]]  # fmt: skip
        return cls(data["task"], data["question"], data["gold"], data["prompt"], sols)


def read_steps(path: Path) -> list[QuestionSteps]:
    return read_records(path, QuestionSteps.from_json)


def choose_solutions(q: QuestionSamples, per_question: int, seed: int) -> list[list[str]]:
    """Up to ``per_question`` distinct multi-step answers of ``q``, right and wrong in turn
    (where it has both), so the labels contrast steps that lead somewhere with steps that don't."""
    rng = random.Random(f"{seed}:{q.question}")
    seen: set[str] = set()
    right: list[list[str]] = []
    wrong: list[list[str]] = []
    for s in q.samples:
        steps = list(split_steps(s.text))
        if len(steps) < 2 or s.text in seen:
            continue
        seen.add(s.text)
        (right if is_right(s.text, q.gold) else wrong).append(steps)
    rng.shuffle(right)
    rng.shuffle(wrong)
    out: list[list[str]] = []
    while len(out) < per_question and (right or wrong):
        for pool in (right, wrong):
            if pool and len(out) < per_question:
                out.append(pool.pop())
    return out


async def roll_out(
    engine: Any,
    sources: Sequence[QuestionSamples],
    journal: Path,
    *,
    split: str,
    per_question: int = 3,
    k: int = 8,
    max_tokens: int = 96,
    temperature: float = 0.7,
    seed: int = 0,
    concurrency: int = 8,
    log_every: int = 10,
) -> list[QuestionSteps]:
    """Label the steps of each question's chosen solutions by ``k`` rollouts per intermediate
    prefix, appending each question to ``journal`` as it finishes (questions there are skipped).
    Every question must be in ``split`` (training labels never come from evaluation questions)."""
    from winnow.engine.base import SamplingSpec

    for q in sources:
        if split_of(q.question) != split:
            raise ValueError(f"question not in the {split!r} split: {q.question!r}")
    written = Journal(journal, QuestionSteps.from_json, [q.question for q in sources])
    limit = asyncio.Semaphore(concurrency)

    def progress(seconds: float) -> str:
        minutes, finished = seconds / 60, len(written.new)
        rolled = sum(len(r) for q in written.new for s in q.solutions for r in s.rollouts)
        return (
            f"[steps] {len(written.done)}/{len(sources)} questions ({finished} this run, "
            f"{finished / minutes:.1f}/min, {rolled / minutes:.0f} rollouts/min)"
        )

    async def prefix_rollouts(prompt_ids: list[int], prefix: str, index: int) -> list[str]:
        ids = prompt_ids + await engine.tokenize(prefix)
        spec = SamplingSpec(
            prompt=tuple(ids),
            n=k,
            max_tokens=max(16, max_tokens - (len(ids) - len(prompt_ids))),
            temperature=temperature,
            seed=seed * 1_000_003 + index,
        )
        generation = await engine.generate(spec)
        return [c.text for c in generation.completions]

    async def one(index: int, q: QuestionSamples) -> None:
        chosen = choose_solutions(q, per_question, seed)
        async with limit:
            prompt = q.prompt or await engine.apply_chat_template(messages(q.question))
            prompt_ids = await engine.tokenize(prompt)
            calls = [
                prefix_rollouts(prompt_ids, "".join(steps[: j + 1]), index * 100 + si * 10 + j)
                for si, steps in enumerate(chosen)
                for j in range(len(steps) - 1)
            ]  # every prefix of every solution in one batch
            rolled_out = iter(await asyncio.gather(*calls))
            solutions = [
                StepSolution(steps, [next(rolled_out) for _ in range(len(steps) - 1)])
                for steps in chosen
            ]
        record = QuestionSteps(q.task, q.question, q.gold, prompt, solutions)
        await written.append(record, log_every, progress)

    await asyncio.gather(*(one(i, sources[i]) for i in written.todo))
    return [written.done[q.question] for q in sources]

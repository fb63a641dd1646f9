"""Problem sets with gold answers, from reasoning-gym, with a fixed train / evaluation split.

Used to train the default reward and by the quality benchmark. The question space of the easy
arithmetic tasks is small (a few hundred distinct questions), so seeds alone would not keep
training and evaluation apart: every question is assigned to a split by a hash of its text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Split = Literal["train", "eval"]

# name -> reasoning-gym dataset and settings. The first two are where the default model's plain
# sampling accuracy lies between 15% and 60% (measured: 28-41% and 40-57% pass@1).
TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "add_sub_1digit": (
        "basic_arithmetic",
        {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ("+", "-")},
    ),
    "mul_1digit": (
        "basic_arithmetic",
        {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ("*",)},
    ),
    "gsm_symbolic": ("gsm_symbolic", {}),
    # three-term add/sub of one-digit numbers: one step from add_sub_1digit, where the default
    # reward is blind (#31); a family to train a reward on with `winnow train fit --tasks`
    "add_sub_3term_1digit": (
        "basic_arithmetic",
        {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1, "operators": ("+", "-")},
    ),
}

INSTRUCTION = "Give the final answer as a single number."
EVAL_BUCKETS = 4  # of 10 hash buckets go to evaluation, the rest to training


@dataclass(frozen=True, slots=True)
class Problem:
    task: str
    question: str
    answer: str
    solution: str | None = None  # a worked solution, one step per line, where the task has one

    @property
    def messages(self) -> list[dict[str, str]]:
        return messages(self.question)


def messages(question: str) -> list[dict[str, str]]:
    """The chat the policy is asked a task question in (the instruction appended)."""
    return [{"role": "user", "content": f"{question} {INSTRUCTION}"}]


def split_of(question: str) -> Split:
    bucket = int(hashlib.sha256(question.encode()).hexdigest(), 16) % 10
    return "eval" if bucket < EVAL_BUCKETS else "train"


def problems(task: str, split: Split, count: int, seed: int = 0) -> list[Problem]:
    """``count`` distinct problems of ``task`` in ``split``, deterministic for a seed."""
    return list(_iter_problems(task, split, count, seed))


def _iter_problems(task: str, split: Split, count: int, seed: int) -> Iterator[Problem]:
    import reasoning_gym

    name, config = TASKS[task]
    seen: set[str] = set()
    size = max(4 * count, 200)
    for attempt in range(20):
        data = reasoning_gym.create_dataset(name, size=size, seed=seed + 7919 * attempt, **config)
        for item in data:
            question = str(item["question"])
            if question in seen or split_of(question) != split:
                continue
            seen.add(question)
            solution = item.get("metadata", {}).get("answer_cot")
            yield Problem(task, question, str(item["answer"]), solution)
            if len(seen) == count:
                return
    raise ValueError(
        f"task {task!r} has fewer than {count} distinct {split} questions (found {len(seen)})"
    )

"""Monte-Carlo step labels: steps cut as tree search writes them, rollouts journaled and
resumed, values recomputed from the rollouts' texts, evaluation questions kept out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from winnow.engine.fake import FakeEngine
from winnow.rewards.base import split_steps
from winnow.train.samples import QuestionSamples, Sample
from winnow.train.steplabels import (
    StepSolution,
    choose_solutions,
    read_steps,
    roll_out,
)
from winnow.train.tasks import split_of


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("a\n\nb", ["a\n\n", "b"]),
        ("a\n\n\n\nb\n\nc", ["a\n\n\n\n", "b\n\n", "c"]),
        ("a\n\n", ["a\n\n"]),
        ("one step", ["one step"]),
        ("\n\nlead", ["\n\n", "lead"]),
        ("", []),
    ],
)
def test_steps_keep_their_delimiter_and_join_back(text: str, steps: list[str]) -> None:
    assert list(split_steps(text)) == steps
    assert "".join(split_steps(text)) == text


def _question(split: str, answers: list[str], gold: str = "7") -> QuestionSamples:
    question = next(
        q for a in range(200) if split_of(q := f"Calculate {a} + 3.") == split
    )  # fmt: skip
    return QuestionSamples("add_sub_1digit", question, gold, "", [Sample(t) for t in answers])


def test_solutions_are_multi_step_distinct_and_alternate_right_and_wrong() -> None:
    q = _question(
        "train",
        ["Good.\n\nThe answer is 7."] * 3
        + ["Bad.\n\nThe answer is 5.", "Worse.\n\nThe answer is 4.", "The answer is 7."],
    )
    chosen = choose_solutions(q, 3, seed=0)
    texts = ["".join(s) for s in chosen]
    assert len(texts) == 3 and len(set(texts)) == 3  # the single-step answer is not a solution
    assert texts[0] == "Good.\n\nThe answer is 7."  # right first, then wrong ones
    assert choose_solutions(q, 3, seed=0) == chosen  # deterministic


def test_rollouts_label_each_prefix_journal_and_resume(tmp_path: Path) -> None:
    def script(prompt: str, index: int, spec: object) -> str:
        # continuations from a prefix that went "Good." reach 7 three times in four
        if "Good." in prompt:
            return "The answer is 7." if index < 3 else "The answer is 1."
        return "The answer is 2."

    engine = FakeEngine(script)
    journal = tmp_path / "steps.jsonl"
    first = _question("train", ["Good.\n\nThe answer is 7.", "Bad.\n\nThe answer is 5."])
    got = asyncio.run(roll_out(engine, [first], journal, split="train", k=4))
    by_text = {"".join(s.steps): s for s in got[0].solutions}
    assert by_text["Good.\n\nThe answer is 7."].values("7") == [0.75, 1.0]
    assert by_text["Bad.\n\nThe answer is 5."].values("7") == [0.0, 0.0]
    calls = len(engine.calls)
    assert calls == 2  # one call of k rollouts per intermediate prefix
    # resumed: the journalled question is not rolled out again
    again = asyncio.run(roll_out(engine, [first], journal, split="train", k=4))
    assert len(engine.calls) == calls
    assert [s.steps for s in again[0].solutions] == [s.steps for s in got[0].solutions]
    assert len(read_steps(journal)) == 1


def test_values_are_recomputed_from_the_texts() -> None:
    s = StepSolution(["x = 3 + 4\n\n", "The answer is 7."], [["So 7.", "The answer is 8."]])
    assert s.values("7") == [0.5, 1.0]
    assert s.values("8") == [0.5, 0.0]


def test_training_labels_never_come_from_evaluation_questions(tmp_path: Path) -> None:
    q = _question("eval", ["a\n\nThe answer is 7."])
    with pytest.raises(ValueError, match="split"):
        asyncio.run(roll_out(FakeEngine(), [q], tmp_path / "j.jsonl", split="train"))

"""The rule-based verifier reward (winnow.rewards.verifier)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from fractions import Fraction

import pytest
import reasoning_gym as rg

from winnow.rewards.base import OutcomeItem, RewardInputError
from winnow.rewards.verifier import THREAD_THRESHOLD, VerifierReward


def _score(items: Sequence[OutcomeItem], reward: VerifierReward | None = None) -> list[float]:
    result = asyncio.run((reward or VerifierReward()).score(items))
    assert result.tokens == 0
    return result.scores


def _item(response: str, reference: str | None) -> OutcomeItem:
    return OutcomeItem(prompt="Q: ...\nA:", response=response, reference=reference)


def test_info() -> None:
    info = VerifierReward().info
    assert (info.name, info.kind, info.backend) == ("verifier", "outcome", "verifier")
    assert info.scale == "1.0 if the final answer matches the reference, else 0.0"
    assert VerifierReward("gsm8k-exact").info.name == "gsm8k-exact"


@pytest.mark.parametrize(
    ("response", "reference", "score"),
    [
        ("The answer is 12.", "12", 1.0),
        ("So, 7 + 5 = 12. Therefore the answer is **12**", "12", 1.0),
        ("7 + 5 = 13. The answer is 13.", "12", 0.0),
        ("Thus $\\boxed{\\frac{1}{2}}$.", "0.5", 1.0),
        ("Thus $\\boxed{\\frac{1}{2}}$.", "1/3", 0.0),
        ("The total is 1,234 dollars.\n#### 1,234", "1234", 1.0),
        ("answer: x = 3", "3", 1.0),
        ("answer: x = 3", "x = 3", 1.0),
        ("The answer is $2x+1$.", "1+2x", 1.0),
        ("The answer is -4.", "-4", 1.0),
        ("The answer is 4.", "-4", 0.0),
        ("The answer is 3.0000001", "3", 1.0),
        ("The answer is 3.1", "3", 0.0),
        ("The answer is unclear", "12", 0.0),
        ("", "12", 0.0),
        # the reference is a worked solution: its #### answer is the gold answer
        ("The answer is 72.", "48/2 = 24 clips in May.\n48 + 24 = 72 clips.\n#### 72", 1.0),
        ("The answer is 24.", "48/2 = 24 clips in May.\n48 + 24 = 72 clips.\n#### 72", 0.0),
        # ... or a boxed one
        ("It is 5.", "We solve $2x = 10$, so $x = \\boxed{5}$.", 1.0),
        # LaTeX references from the datasets
        ("The answer is 242/311.", "$\\dfrac{242}{311}$", 1.0),
        ("The answer is 50%.", "50", 1.0),
    ],
)
def test_scores(response: str, reference: str, score: float) -> None:
    assert _score([_item(response, reference)]) == [score]


def test_missing_reference_is_an_input_error() -> None:
    items = [_item("The answer is 12.", "12"), _item("The answer is 12.", None)]
    with pytest.raises(RewardInputError, match="needs a reference answer per item"):
        _score(items)
    with pytest.raises(RewardInputError, match="needs a reference answer"):
        _score([_item("The answer is 12.", "  ")])


def test_unreadable_reference_is_an_input_error() -> None:
    with pytest.raises(RewardInputError, match="can't read an answer"):
        _score([_item("The answer is Paris.", "Paris")])


def test_no_items() -> None:
    assert _score([]) == []


def test_outcome_reward_scores_no_steps() -> None:
    from winnow.rewards.base import ProcessItem

    with pytest.raises(RewardInputError):
        asyncio.run(VerifierReward().score_steps([ProcessItem("p", ("a",), reference="1")]))


def test_large_batches_score_in_a_worker_thread() -> None:
    n = 2 * THREAD_THRESHOLD
    items = [_item(f"So the answer is {i}.", str(i if i % 2 else i + 1)) for i in range(n)]
    assert _score(items) == [float(i % 2) for i in range(n)]
    with pytest.raises(RewardInputError):  # errors from the worker thread still surface
        _score([*items, _item("1", "Paris")])


def test_start_warms_up() -> None:
    asyncio.run(VerifierReward().start())


# ---------------------------------------------------------------------------------------------
# real data: every dataset item's own gold answer is correct, a perturbed one is wrong


def _perturb(answer: str) -> str:
    """A nearby wrong answer in the same notation: bump the first integer (numerator) by one,
    or the third decimal of a decimal."""
    decimal = re.fullmatch(r"-?\d+\.\d+", answer)
    if decimal:
        return str(Fraction(answer) + Fraction(1, 1000))
    return re.sub(r"\d+", lambda m: str(int(m.group()) + 1), answer, count=1)


def _framings(answer: str) -> list[str]:
    return [
        answer,
        f"Let me work through this step by step.\n\nThe answer is {answer}.",
        f"Therefore, the final answer is $\\boxed{{{answer}}}$. I hope it is correct.",
        f"So the result is **{answer}**",
    ]


@pytest.mark.parametrize(
    "dataset",
    [
        "basic_arithmetic",
        "chain_sum",
        "products",
        "gsm_symbolic",
        "fraction_simplification",
        "simple_equations",
        "decimal_arithmetic",
    ],
)
def test_reasoning_gym_gold_answers_score_one(dataset: str) -> None:
    data = list(rg.create_dataset(dataset, size=50, seed=1))
    gold = [str(entry["answer"]) for entry in data]
    items = [_item(r, g) for g in gold for r in _framings(g)]
    assert _score(items) == [1.0] * len(items)
    wrong = [_item(r, g) for g in gold for r in _framings(_perturb(g))]
    assert _score(wrong) == [0.0] * len(wrong)


def test_gsm_symbolic_worked_solutions_as_references() -> None:
    data = list(rg.create_dataset("gsm_symbolic", size=50, seed=1))
    solutions = [entry["metadata"]["answer_cot"] for entry in data]
    assert all("####" in s for s in solutions)
    right = [
        _item(f"The answer is {e['answer']}.", s) for e, s in zip(data, solutions, strict=True)
    ]
    assert _score(right) == [1.0] * len(right)
    # a worked solution scored against itself (the model reproducing it) is correct too
    assert _score([_item(s, s) for s in solutions]) == [1.0] * len(solutions)
    wrong = [
        _item(f"The answer is {_perturb(e['answer'])}.", s)
        for e, s in zip(data, solutions, strict=True)
    ]
    assert _score(wrong) == [0.0] * len(wrong)

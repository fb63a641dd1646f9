"""Problem keys and the leak-free split (#31): spellings of one problem share a key, so they
never straddle train and eval; and the report of evaluation questions that are training ones."""

from __future__ import annotations

import pytest

from winnow.train.problem_keys import leak_report, problem_key, split_of_key


@pytest.mark.parametrize(
    "a, b",
    [
        ("Calculate ( -1 - -1 ).", "Calculate -1 - -1."),  # the example
        ("Calculate -1 - -1.", "Calculate -1 + 1."),  # double negation is a plus
        ("Calculate 3 + -7.", "Calculate 3 - 7."),
        ("Calculate 5 - 3.", "calculate   5-3"),  # whitespace, case, the trailing period
        ("Calculate -( 5 + -8 + -6 ).", "Calculate -5 + 8 + 6."),  # a minus over brackets
        ("Calculate ( -9 - 8 ) + 6.", "Calculate -9 - 8 + 6."),
        ("Calculate 7 * 12.", "Solve the following multiplication: 7 * 12."),
        ("What is ( 7 * -3 )?", "What is 7 * - 3"),
        ("Calculate 7 \u00d7 12.", "Calculate 7 * 12."),
        ("Calculate 0 - -0.", "Calculate 0 + 0."),
        ("Calculate 2.50 + 1.", "Calculate 2.5 + 1."),
    ],
)
def test_spellings_of_one_problem_share_a_key(a: str, b: str) -> None:
    assert problem_key(a) == problem_key(b)
    assert problem_key(a).startswith("arith:")


@pytest.mark.parametrize(
    "a, b",
    [
        ("Calculate -1 - -1.", "Calculate -1 - 1."),
        ("Calculate 5 - 3.", "Calculate 3 - 5."),  # order matters: not the same problem
        ("Calculate 5 - 3 + 6.", "Calculate 5 - 3 - 6."),
        ("Calculate 7 * 12.", "Calculate 7 * 13."),
        ("Calculate 7 * 12.", "Calculate 7 + 12."),
    ],
)
def test_different_problems_keep_different_keys(a: str, b: str) -> None:
    assert problem_key(a) != problem_key(b)


def test_the_key_of_a_question_without_an_expression_is_its_normalized_text() -> None:
    assert problem_key("How many legs do 3 cats have?") == "text:how many legs do 3 cats have"
    same = problem_key("how many  LEGS do 3 cats have")
    assert problem_key("How many legs do 3 cats have?") == same
    # a number outside an expression (a date, a count) makes it a word problem, not arithmetic
    assert problem_key("On 2024-01-05 Ann had 3 apples and ate 1.").startswith("text:")
    assert problem_key("The years 1990 2000").startswith("text:")


def test_the_group_wins_over_the_text() -> None:
    assert problem_key("Calculate 1 + 2.", group="g7") == "group:g7"
    assert problem_key("anything", group="g7") == problem_key("else", group=" g7 ")
    assert problem_key("Calculate 1 + 2.", group="  ") == problem_key("Calculate 1 + 2.")


def test_the_split_follows_the_key_and_is_near_the_fraction() -> None:
    keys = [problem_key(f"Calculate {a} - {b}.") for a in range(-30, 30) for b in range(-9, 10)]
    sides = [split_of_key(k, 0.3) for k in keys]
    assert 0.25 < sides.count("eval") / len(sides) < 0.35
    bracketed = problem_key("Calculate ( -1 - -1 ).")
    assert split_of_key(bracketed) == split_of_key(problem_key("Calculate -1 - -1."))
    assert split_of_key("k", 0.0) == "train" and split_of_key("k", 1.0) == "eval"
    salted = {split_of_key(k, 0.5, salt="s") for k in keys[:50]}
    assert salted == {"train", "eval"}


def test_leak_report_counts_evaluation_questions_seen_in_training() -> None:
    train = ["Calculate -1 - -1.", "Calculate 4 * 2.", ("a word problem", "g1")]
    evals = [
        "Calculate ( -1 - -1 ).",  # the training sum, bracketed
        "Calculate -1 + 1.",  # and again, the negation folded
        "Calculate 4 * 3.",
        ("another wording", "g1"),  # the same group
        "Calculate 2 * 4.",  # commuted: the same problem
    ]
    report = leak_report(evals, train)
    assert (report.eval_questions, report.train_questions) == (5, 3)
    assert report.shared == 4 and report.shared_keys == 3
    assert report.fraction == pytest.approx(0.8)
    assert ("Calculate ( -1 - -1 ).", "Calculate -1 - -1.") in report.examples


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Calculate 5 + -4.", "Calculate -4 + 5."),
        ("Calculate 7 - 6 + 5.", "Calculate ( 5 + 7 ) - 6."),
        ("Solve the following multiplication: 7 * 12.", "Calculate 12 * 7."),
        ("Calculate -5 * 2.", "Calculate 2 * -5."),
    ],
)
def test_a_commuted_sum_or_product_is_one_problem(a: str, b: str) -> None:
    assert problem_key(a) == problem_key(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Calculate 8 - 5.", "Calculate 5 - 8."),
        ("Calculate -5 * 2.", "Calculate 5 * 2."),
        ("Calculate 3 * 4 + 2.", "Calculate 3 * 6."),
        ("Calculate 8 / 2.", "Calculate 2 / 8."),
    ],
)
def test_reordering_that_changes_the_problem_keeps_keys_apart(a: str, b: str) -> None:
    assert problem_key(a) != problem_key(b)

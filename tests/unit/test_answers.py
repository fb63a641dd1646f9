"""Answer extraction, canonical keys, equivalence and grouping (winnow.answers.final)."""

from __future__ import annotations

from fractions import Fraction

import hypothesis
import pytest

from winnow.answers.final import canonical, equivalent, extract_answer
from winnow.answers.groups import group_answers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # SmolLM2-style chatty endings
        ("The answer is 12.", "12"),
        ("So, 7 + 5 = 12. Therefore the answer is **12**", "12"),
        (
            "Tom has 5 apples and buys 7 more.\n\nThe final answer is 12. I hope it is correct.",
            "12",
        ),
        ("The answer is: \n\n 42", "42"),
        ("**Answer:** 17", "17"),
        ("Final Answer: The final answer is $7$. I hope it is correct.", "7"),
        ("The answer is $\\$3.50$.", "\\$3.50"),
        ("The answer is 12 because 5 + 7 = 12.", "12"),
        ("So the result is **$\\dfrac{242}{311}$**", "\\dfrac{242}{311}"),
        ("Each gets \\frac34 of it, i.e. -\\frac{1}{2} less", "-\\frac{1}{2}"),
        ("The answer is 12 apples.", "12 apples"),
        ("The answer is 50%.", "50%"),
        ("The answer is -5.", "-5"),
        ("The answer is \u22125.", "-5"),  # unicode minus
        ("The answer is 3.14.", "3.14"),
        ("answer: x = 3", "x = 3"),
        ("The answer is $2x+1$.", "2x+1"),
        ("The answer is \\(\\sqrt{8}\\).", "\\sqrt{8}"),
        # boxed wins over everything, the last one counts, nesting is fine
        ("Thus $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("First \\boxed{3}, then corrected: \\boxed{4}. The answer is 5.", "4"),
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),
        ("\\fbox{9}", "9"),
        ("$\\boxed 5$", "5"),
        # GSM8K marker
        ("She pays 617 + 617 = 1,234 dollars.\n#### 1,234", "1,234"),
        ("#### 72", "72"),
        # bare short answers
        ("\\frac{1}{2}", "\\frac{1}{2}"),
        ("1/2", "1/2"),
        ("  -7.5 ", "-7.5"),
        # last number anywhere (not only the last line)
        ("So 7 + 5 = 12.\n\nI hope this helps!", "12"),
        ("so the result is 60/2 = 30.", "30"),
        ("So we get .5", ".5"),
        ("Each share is 3/4 of a pie", "3/4"),
        ("It costs $3.50 in total.", "3.50"),
        ("The total is 1,234,567 units", "1,234,567"),
        ("The temperature dropped to -8 degrees", "-8"),
        # numbers inside words are not numbers; numbers before units are
        ("The mp3 has 5 songs, about H2O", "5"),
        ("I read about COVID-19", None),
        ("It weighs 12kg", "12"),
        # nothing readable
        ("The answer is unclear", None),
        ("I don't know.", None),
        ("", None),
        # an answer clause without a number falls back to the last number (documented)
        ("I computed 5 and 7 but the answer is unclear.", "7"),
        # "answer:" mid-sentence is not an answer marker
        ("Let me answer: first we add 2 and 3 to get 5", "5"),
        # a truncated box is skipped
        ("so it is \\boxed{12", "12"),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("answer", "key"),
    [
        ("12", "12"),
        ("1,000", "1000"),
        ("1{,}000", "1000"),
        ("3.0", "3"),
        ("3.000", "3"),
        ("-0", "0"),
        ("+5", "5"),
        (".5", "1/2"),
        ("0.75", "3/4"),
        ("3/4", "3/4"),
        ("6/8", "3/4"),
        ("\\frac{3}{4}", "3/4"),
        ("\\dfrac34", "3/4"),
        ("\\tfrac{3}{4}", "3/4"),
        ("\\frac{1}2", "1/2"),
        ("-\\frac{1}{2}", "-1/2"),
        ("\\left(\\frac{1}{2}\\right)", "1/2"),
        ("$12$", "12"),
        ("\\$12.50", "25/2"),
        ("50%", "50"),
        ("50\\%", "50"),
        ("90^\\circ", "90"),
        ("90^{\\circ}", "90"),
        ("5\\text{ cm}^2", "5"),
        ("12 apples", "12"),
        ("x = 3", "3"),
        ("y=-2.5", "-5/2"),
        ("7 + 5 = 12", "12"),
        ("2^{10}", "1024"),
        ("\\sqrt[3]{8}", "2"),
        ("1e3", "1000"),
        ("**12**", "12"),
    ],
)
def test_canonical_numbers(answer: str, key: str) -> None:
    assert canonical(answer) == key


@pytest.mark.parametrize(
    "answer",
    [
        "unclear",
        "Paris",
        "__import__('os').system('true')",
        "x.y",
        "1/0",
        "\\frac{1}{0}",
        "9^9^9",  # a power tower is refused, not computed
        "1e999999",
        "x" * 300,
        "2 \\pm 3",  # unknown LaTeX command
        "x^2 + y^2 = 1",  # equations are not answers we compare
        "12 because 5 + 6 = 11",
    ],
)
def test_canonical_unreadable(answer: str) -> None:
    assert canonical(answer) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("2x+1", "1+2x"),
        ("2x+1", "1 + 2*x"),
        ("x(x+1)", "x^2+x"),
        ("\\frac{x^2-1}{x-1}", "x+1"),
        ("\\sqrt{8}", "2\\sqrt{2}"),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
        ("(B)", "\\text{(B)}"),
        ("\\frac{\\pi}{2}", "\\pi/2"),
    ],
)
def test_canonical_symbolic_spellings_share_a_key(a: str, b: str) -> None:
    assert canonical(a) is not None
    assert canonical(a) == canonical(b)


def test_canonical_keeps_distinct_values_apart() -> None:
    keys = [canonical(a) for a in ["1", "-1", "1/2", "2", "x", "y", "x+1", "\\sqrt{2}", "\\pi"]]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("0.5", "1/2", True),
        ("0.5", "\\frac12", True),
        ("1/2", "\\frac{1}{2}", True),
        ("1000", "1,000", True),
        ("2x+1", "1+2x", True),
        ("3", "3.0000001", True),  # within the relative tolerance
        ("3", "3.1", False),
        ("1/3", "0.3333333", True),
        ("1/3", "0.333", False),
        ("443991300155202", "443991300155203", False),  # integers compare exactly
        ("\\sqrt{2}", "1.41421356237", True),
        ("(1+\\sqrt{2})^2", "3+2\\sqrt{2}", True),
        ("sin(x)^2+cos(x)^2", "1", True),  # an identity sympy's normal form doesn't see
        ("\\ln(e^2)", "2", True),
        ("(x+1)^2", "x^2+2x+1", True),
        ("(x+1)^2", "x^2+1", False),
        ("x", "y", False),
        ("3+2i", "3+2.0i", True),
        ("x = 3", "3", True),
        ("12", "unclear", False),
        ("unclear", "unclear", False),  # unreadable answers equal nothing
    ],
)
def test_equivalent(a: str, b: str, same: bool) -> None:
    assert equivalent(a, b) is same
    assert equivalent(b, a) is same


def test_group_answers() -> None:
    texts = [
        "The answer is 12.",
        "So 5 + 7 = 12. Therefore the answer is **12.0**",
        "\\boxed{\\frac{24}{2}}",
        "The answer is unclear",
        "#### 3",
        "The answer is 3.0000001",  # merged with 3: numerically close
        "\\boxed{\\frac12}",
        "The answer is 0.5.",
        "The answer is $x$.",
        "I have no idea.",
        "#### 1,2",  # reads as 1
    ]
    assert group_answers(texts) == [0, 0, 0, None, 1, 1, 2, 2, 3, None, 4]


def test_group_answers_keeps_close_integers_apart() -> None:
    texts = ["#### 443991300155202", "#### 443991300155203", "#### 443991300155202"]
    assert group_answers(texts) == [0, 1, 0]


def test_group_answers_empty() -> None:
    assert group_answers([]) == []


def test_group_answers_of_64_long_responses_reuses_its_work(sympy_worker_calls: list[str]) -> None:
    """Grouping 64 long responses (six distinct finals) asks the sympy workers nothing once
    those finals have been read: the cost does not grow with the responses' length or number.
    (Counted, not timed: a wall-clock bound fails on a loaded machine.)"""
    steps = " ".join(f"Step {i}: {i * 7} + {i} = {i * 8}." for i in range(60))
    finals = ["12", "12.0", "\\frac{24}{2}", "13", "x+1", "unclear"]
    texts = [f"{steps}\n\nThe answer is **{finals[i % len(finals)]}**." for i in range(64)]
    group_answers(texts)  # warm the caches (and the sympy import)
    sympy_worker_calls.clear()  # count from here
    groups = group_answers(texts)
    assert sympy_worker_calls == []
    assert groups[:6] == [0, 0, 0, 1, 2, 3]  # "unclear" falls back to the last number, 59 * 8


# ---------------------------------------------------------------------------------------------
# properties

st = hypothesis.strategies


def _spellings(value: Fraction) -> list[str]:
    """Ways a model or a dataset writes one rational number."""
    p, q = value.numerator, value.denominator
    sign = "-" if p < 0 else ""
    out = [f"{p}/{q}", f"{sign}\\frac{{{abs(p)}}}{{{q}}}", f"\\dfrac{{{p}}}{{{q}}}"]
    out.append(f"{2 * p}/{2 * q}")  # unreduced
    if q == 1:
        out += [str(p), f"{p}.0", f"{p:,}", f"${p}$", f"\\boxed{{{p}}}", f"x = {p}"]
    if 10**6 % q == 0:  # a terminating decimal
        out.append(f"{float(value):.6f}")
    return out


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(
    st.fractions(min_value=-(10**6), max_value=10**6, max_denominator=1000)
    | st.integers(-(10**12), 10**12).map(Fraction)
)
def test_every_spelling_of_a_rational_has_one_key(value: Fraction) -> None:
    keys = {canonical(spelling) for spelling in _spellings(value)}
    assert keys == {str(value)}


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(st.integers(-(10**9), 10**9), st.sampled_from(["{}", "{:,}", "{}.00"]))
def test_extracted_integers_survive_chatty_framing(n: int, fmt: str) -> None:
    shown = fmt.format(n)
    for text in (
        f"Let me think. 3 + 4 = 7. The answer is {shown}.",
        f"So the total is **{shown}**\n\nI hope this helps!",
        f"Therefore, the final answer is $\\boxed{{{shown}}}$",
        f"She has {shown} marbles.\n#### {shown}",
    ):
        answer = extract_answer(text)
        assert answer is not None
        assert canonical(answer) == str(n), text


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(st.lists(st.integers(-50, 50), max_size=40))
def test_group_ids_follow_first_appearance(values: list[int]) -> None:
    groups = group_answers([f"The answer is {v}." for v in values])
    first: dict[int, int] = {}
    for value, group in zip(values, groups, strict=True):
        assert group == first.setdefault(value, len(first))

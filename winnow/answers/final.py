"""Final answers of model responses: extraction, canonical keys and equivalence.

One module shared by every voting strategy (their answer groups: :mod:`winnow.answers.groups`)
and by the rule-based verifier, so that "the answer" means the same thing everywhere.

Extraction (:func:`extract_answer`: the boxed answer, the "answer is" clause, GSM8K's marker...)
is text scanning, in :mod:`winnow.answers.extract`; whether a span reads as an answer is this
module's grammar.

Canonical keys (:func:`canonical`): exact rationals are written as reduced fractions (``"3/4"``,
``"-2"``), so every spelling of one value gets one key: ``0.75``, ``.75``, ``3/4``, ``\\dfrac34``
all give ``"3/4"``; ``1,000`` and ``1000.0`` give ``"1000"``; ``-0`` gives ``"0"``. Percent
signs, degree marks, currency signs, ``\\text{...}`` units and trailing unit words
(``12 apples``) are dropped: ``50%`` is ``50``, as GSM8K/MATH references write it. ``x = 3`` is
``3`` when the left side is a single variable; an arithmetic chain ``7 + 5 = 12`` is its last
side when that is a number and the other sides are plain arithmetic. Anything else is read by
:mod:`winnow.answers.expr` (at most 200 characters of whitelisted tokens: digits, single-letter
variables, ``+-*/^()``, ``sqrt ln log exp sin cos tan pi e i oo``):

* **A final answer is reduced to a value.** An arithmetic operator between two numbers
  (``1 + 4``, ``-(2 + -5)``, ``7 * 8``, ``\\frac12 + \\frac13``) is a calculation: it has no key,
  forms no group and the verifier scores it 0 (a model that repeats "1 + 4" has not answered
  "what is 1 + 4?"). A fraction (``6/8``), a sign, a power (``2^{10}``, ``3 \\cdot 10^8``) and
  anything with a variable, a constant or a function (``2\\sqrt{2}``, ``1+\\sqrt{5}``) are values.
* **Every answer is bounded before anything evaluates it**: the digits of every exact number
  (at most 4000), exponents (at most 1000), arguments of trig functions (10^100) and ``exp``
  (10^4), magnitudes at the probe points, and what ``cancel`` would multiply out (past the
  estimate the expression keeps sympy's automatic form instead). An answer past a bound is
  *refused*: no key, like an unreadable one; :func:`reference_problem` says why.
* Plain rational arithmetic (``2^{10}``, ``-(3)``) is evaluated exactly in-process. What has
  variables, constants, functions or fractional powers goes to **sympy in a worker process**
  (:mod:`winnow.answers.workers`) with a hard deadline of :data:`ANSWER_DEADLINE` seconds: a
  worker past it is killed and replaced, and the answer is refused. Its key is ``srepr`` of
  sympy's normal form (after ``cancel`` when cheap), so ``2x+1`` and ``1+2*x`` share a key.
  Plain numbers never leave the process.

Equations, tuples, intervals, sets, words and multi-letter variables (``xy``) are not
understood; single letters are variables, so a multiple-choice ``(B)`` is the symbol ``B``.

Equivalence (:func:`equivalent`): equal keys; or numerically close values (relative tolerance
:data:`REL_TOL`) unless both are integers, which compare exactly (so ``443991300155202`` and
``443991300155203`` stay different, while ``3`` and ``3.0000001`` match); or, for expressions
with variables, agreement at a few fixed probe points (a numeric ``a - b == 0`` in the worker:
milliseconds, where ``simplify(a - b)`` can take seconds, and it sees trig/log identities).

The functions here are synchronous and may wait for a worker: async code calls them through
:func:`off_loop` (inline when nothing needs a worker, else in a thread). Results are cached.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from winnow.answers import expr, extract, grammar, sandbox, workers
from winnow.answers.extract import MAX_ANSWER_CHARS, final_answer
from winnow.answers.latex import (
    UNICODE,
    drop_assignment,
    drop_number_parens,
    parse_number,
    to_plain,
)
from winnow.answers.workers import ANSWER_DEADLINE, Unavailable, off_loop, start_workers

__all__ = [
    "ANSWER_DEADLINE",
    "MAX_SYMBOLIC_CHARS",
    "REL_TOL",
    "AnswerError",
    "AnswerValue",
    "answer_value",
    "canonical",
    "equivalent",
    "extract_answer",
    "gold_answer",
    "matches_reference",
    "numbers_close",
    "off_loop",
    "reference_problem",
    "start_workers",
    "stated_answer",
]

log = logging.getLogger("winnow.answers.final")

REL_TOL = 1e-6  # relative tolerance for non-integer numeric answers
MAX_SYMBOLIC_CHARS = 200  # longer expressions are not read
_CACHE_SIZE = 8192
_EXPONENT_NOTATION_RE = re.compile(r"\d[eE][+-]?\d")  # fixed length: linear

# ---------------------------------------------------------------------------------------------
# canonical keys


@dataclass(frozen=True, slots=True)
class AnswerValue:
    """A parsed answer: its key, its exact rational value or the sympy source it was read from,
    and its floating-point value when it is a real constant (for tolerant comparisons)."""

    key: str
    number: Fraction | None = None
    source: str | None = None  # for values that are not rational: what the worker parses
    approx: float | None = None
    reduced: bool = True  # False: a calculation (1 + 4), no final answer

    @property
    def is_integer(self) -> bool:
        return self.number is not None and self.number.denominator == 1


@dataclass(frozen=True, slots=True)
class _Refused:
    """A well-formed answer past the bounds (or past the deadline): no key."""

    reason: str


@dataclass(frozen=True, slots=True)
class _Expression:
    """An answer that is not a plain number: its sympy source and its tree."""

    source: str
    node: grammar.Node


class AnswerError(ValueError):
    """A reference has no gold answer; the message says why."""


def canonical(answer: str) -> str | None:
    """A key shared by all spellings of one answer value; None when it can't be read, is past
    the bounds, or is not reduced to a value (``1 + 4``)."""
    value = answer_value(answer)
    return value.key if value is not None and value.reduced else None


def answer_value(answer: str) -> AnswerValue | None:
    """The value an (extracted) answer denotes, reduced or not; None when it cannot be read or
    is refused (past the bounds, or no worker in time)."""
    if not answer or len(answer) > MAX_ANSWER_CHARS:  # not read, nor kept as a cache key
        return None
    try:
        value = _analyse(answer)
    except Unavailable as exc:
        log.warning("answer %r not read: %s", answer[:80], exc)
        return None
    return value if isinstance(value, AnswerValue) else None


@lru_cache(maxsize=_CACHE_SIZE)
def _form(answer: str) -> Fraction | _Expression | None:
    """The in-process reading of an answer: a plain number, a well-formed expression, or None.
    Grammar only, nothing is evaluated: microseconds."""
    if len(answer) > MAX_ANSWER_CHARS:
        return None
    plain = to_plain(answer.translate(UNICODE))
    if plain is None:
        return None
    plain = drop_assignment(plain)
    if plain is None:
        return None
    number = parse_number(drop_number_parens(plain))
    if number is not None:
        return number
    if len(plain) > MAX_SYMBOLIC_CHARS or _EXPONENT_NOTATION_RE.search(plain):
        return None  # 1e999999 is no product with Euler's number
    toks = grammar.tokens(plain)
    node = grammar.parse(toks) if toks else None
    if node is None or toks is None:
        return None
    return _Expression(grammar.sympy_source(toks), node)


def _reads_as_answer(span: str) -> bool:
    """Whether an extracted span is an answer, as grammar (its value may still be refused). A
    span past MAX_ANSWER_CHARS (a GSM8K line may be a whole response) is not, and is not kept as
    a cache key."""
    return len(span) <= MAX_ANSWER_CHARS and _form(span) is not None


def extract_answer(text: str) -> str | None:
    """The final answer of a model response (see :mod:`winnow.answers.extract`), or None."""
    return final_answer(text, _reads_as_answer)


def stated_answer(text: str) -> str | None:
    """The answer ``text`` states explicitly (``\\boxed{}``, "The answer is ...", ``#### n``), or
    None (see :func:`winnow.answers.extract.stated_answer`)."""
    return extract.stated_answer(text, _reads_as_answer)


@lru_cache(maxsize=_CACHE_SIZE)
def _analyse(answer: str) -> AnswerValue | _Refused | None:
    form = _form(answer)
    if form is None:
        return None
    if isinstance(form, Fraction):
        return _rational_value(form)
    try:
        reading = expr.read(form.node)
    except expr.Refused as exc:
        return _Refused(str(exc))
    except ZeroDivisionError:
        return None  # 1/0 has no value
    except (ArithmeticError, ValueError, RecursionError) as exc:  # a gap in the estimates
        log.warning("answer %r not bounded (%r), refused", answer[:80], exc)
        return _Refused("it could not be bounded")
    if reading.number is not None:
        return _rational_value(reading.number, reduced=reading.reduced)
    try:
        result = workers.call("value", form.source, reading.cancel)
    except sandbox.DeadlineExceeded:
        log.warning("answer %r: no value within %g s, refused", answer[:80], ANSWER_DEADLINE)
        return _Refused(f"it took longer than {ANSWER_DEADLINE:g} s to evaluate")
    except sandbox.WorkerError as exc:
        log.warning("answer %r: the worker failed (%s), refused", answer[:80], exc)
        return _Refused("it could not be evaluated")
    if result is None:
        return None
    key, number, approx = result
    if number is not None:
        return _rational_value(Fraction(number), reduced=reading.reduced)
    return AnswerValue(key, source=form.source, approx=approx, reduced=reading.reduced)


def _rational_value(number: Fraction, reduced: bool = True) -> AnswerValue:
    try:
        approx: float | None = float(number)
    except OverflowError:
        approx = None
    key = str(number)  # "3/4", "-2", "0": Fraction is always reduced, with the sign on top
    return AnswerValue(key, number=number, approx=approx, reduced=reduced)


# ---------------------------------------------------------------------------------------------
# equivalence (grouping: winnow.answers.groups)


def equivalent(a: str, b: str) -> bool:
    """Whether two answers (already extracted) denote the same value; an unreadable, refused or
    unreduced answer (``1 + 4``) equals nothing."""
    va, vb = answer_value(a), answer_value(b)
    if va is None or vb is None or not (va.reduced and vb.reduced):
        return False
    return _same(va, vb)


def _same(a: AnswerValue, b: AnswerValue) -> bool:
    if a.key == b.key:
        return True
    try:
        return _close(a, b)
    except Unavailable as exc:
        log.warning("answers not compared: %s", exc)
        return False


def _close(a: AnswerValue, b: AnswerValue) -> bool:
    if a.approx is not None and b.approx is not None:
        return numbers_close(a, b)
    if a.source is None and b.source is None:
        return False  # rationals too large for floats, and unequal
    return _sympy_equal(a, b) if a.key <= b.key else _sympy_equal(b, a)


def numbers_close(a: AnswerValue, b: AnswerValue) -> bool:
    """Exact for two integers, else within :data:`REL_TOL` (rounded decimals, 1/3 ~ 0.3333333)."""
    if a.key == b.key:
        return True
    if (a.is_integer and b.is_integer) or a.approx is None or b.approx is None:
        return False
    return math.isclose(a.approx, b.approx, rel_tol=REL_TOL)


@lru_cache(maxsize=_CACHE_SIZE)
def _sympy_equal(a: AnswerValue, b: AnswerValue) -> bool:
    """Numeric identity test in a worker: ``a - b`` vanishes at a few probe points."""
    try:
        return bool(workers.call("equal", _source_of(a), _source_of(b)))
    except (sandbox.DeadlineExceeded, sandbox.WorkerError):
        return False


def _source_of(value: AnswerValue) -> str:
    if value.source is not None:
        return value.source
    assert value.number is not None
    return f"({value.number.numerator})/({value.number.denominator})"


# ---------------------------------------------------------------------------------------------
# references (gold answers from clients)


def gold_answer(reference: str) -> str:
    """The gold answer of a reference: the reference itself when it reads as an answer, else the
    answer extracted from it (a worked solution ending in ``#### 72``). Unlike a model's answer,
    a reference may be an unreduced calculation (``2 + 3`` is 5: a client's gold answer is
    trusted). Raises :class:`AnswerError` saying why there is none: unreadable, or past the
    bounds (the reason), which a server turns into a 400."""
    for candidate, whole in ((reference, True), (extract_answer(reference), False)):
        if not candidate or len(candidate) > MAX_ANSWER_CHARS:  # unreadable, as in _form
            continue
        try:
            value = _analyse(candidate)
        except Unavailable as exc:
            raise AnswerError(f"the reference could not be read now ({exc}); retry") from None
        if isinstance(value, AnswerValue):
            return candidate
        if isinstance(value, _Refused):
            shown = "" if whole else f" (its answer {candidate[:80]!r})"
            raise AnswerError(f"the reference{shown} is too large to evaluate: {value.reason}")
    raise AnswerError(
        f"can't read an answer in the reference {reference[:80]!r} (it understands numbers, "
        "fractions and simple expressions)"
    )


def reference_problem(reference: str) -> str | None:
    """Why ``reference`` can never be a gold answer because it is past the bounds, found without
    evaluating anything (in-process, microseconds: fit for an event loop), else None. An
    unreadable reference is not reported here: only a reward that needs it can say so."""
    for candidate in (reference, extract_answer(reference)):
        form = _form(candidate) if candidate and len(candidate) <= MAX_ANSWER_CHARS else None
        if isinstance(form, _Expression):
            try:
                expr.read(form.node)
            except expr.Refused as exc:
                return f"the reference is too large to evaluate: {exc}"
            except ZeroDivisionError:
                return None
            return None
        if form is not None:
            return None
    return None


def matches_reference(response: str, gold: str) -> bool:
    """Whether a response's final answer equals a gold answer (from :func:`gold_answer`): the
    verifier's rule. The response's answer must be reduced to a value; the gold need not."""
    answer = extract_answer(response)
    va = answer_value(answer) if answer else None
    if va is None or not va.reduced:
        return False
    vb = answer_value(gold)
    return vb is not None and _same(va, vb)

"""Final answers of model responses: extraction, canonical keys and equivalence.

One module shared by every voting strategy (majority vote, best-of-majority, ...) and by the
rule-based verifier, so that "the answer" means the same thing everywhere.

Extraction (:func:`extract_answer`), in priority order:

1. the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces, nesting allowed);
2. the last "the (final) answer is ..." / "answer: ..." clause (case-insensitive), up to the end
   of its sentence. The clause is returned as text when it reads as an answer (a number, a
   fraction, ``x = 3``, ``\\frac{1}{2}``, ``2x+1``, ``12 apples``, and also ``1 + 4``: an
   expression that is no final answer, which then has no key); otherwise the first number in it
   is ("the number after the last 'answer is'"); a clause with no number at all ("the answer is
   unclear") is ignored and the lower-priority rules decide;
3. GSM8K's last ``#### n``;
4. the whole response, when it is a single short line that reads as an answer (``\\frac{1}{2}``);
5. the last number *anywhere* in the text, not only in the last line: chatty models often end
   with "I hope this helps!" after the result. ``3/4`` and ``\\frac{3}{4}`` count as numbers.
   Numbers glued to a preceding letter (``mp3``, ``H2O``, ``COVID-19``) are not numbers; a
   number followed by a unit (``12kg``, ``3rd``) is.

Extraction never evaluates anything (whether a span "reads as an answer" is a question of
grammar), so it runs in-process in microseconds whatever the text.

Canonical keys (:func:`canonical`): exact rationals are written as reduced fractions (``"3/4"``,
``"-2"``), so every spelling of one value gets one key: ``0.75``, ``.75``, ``3/4``, ``\\dfrac34``
all give ``"3/4"``; ``1,000`` and ``1000.0`` give ``"1000"``; ``-0`` gives ``"0"``. Percent
signs, degree marks, currency signs, ``\\text{...}`` units and trailing unit words
(``12 apples``) are dropped: ``50%`` is ``50``, as GSM8K/MATH references write it. ``x = 3`` is
``3`` when the left side is a single variable; an arithmetic chain ``7 + 5 = 12`` is its last
side when that is a number and the other sides are plain arithmetic. Anything else is read by
:mod:`winnow.answer_expr` (at most 200 characters of whitelisted tokens: digits, single-letter
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
  (:mod:`winnow.answer_sympy` via :mod:`winnow.sandbox`) with a hard deadline of
  :data:`ANSWER_DEADLINE` seconds: a worker past it is killed and replaced, and the answer is
  refused. Its key is ``srepr`` of sympy's normal form (after ``cancel`` when cheap), so ``2x+1``
  and ``1+2*x`` share a key. Plain numbers never leave the process.

Equations, tuples, intervals, sets, words and multi-letter variables (``xy``) are not
understood; single letters are variables, so a multiple-choice ``(B)`` is the symbol ``B``.

Equivalence (:func:`equivalent`): equal keys; or numerically close values (relative tolerance
:data:`REL_TOL`) unless both are integers, which compare exactly (so ``443991300155202`` and
``443991300155203`` stay different, while ``3`` and ``3.0000001`` match); or, for expressions
with variables, agreement at a few fixed probe points (a numeric ``a - b == 0`` in the worker:
milliseconds, where ``simplify(a - b)`` can take seconds, and it sees trig/log identities).

The functions here are synchronous and may wait for a worker (up to the deadline, plus a bounded
wait for a free worker): async code calls them through :func:`off_loop`, which runs them inline
when nothing needs a worker and in a thread otherwise. Results are cached.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import math
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any, TypeVar

from winnow import answer_expr, sandbox

__all__ = [
    "ANSWER_DEADLINE",
    "MAX_SYMBOLIC_CHARS",
    "REL_TOL",
    "AnswerError",
    "answers_and_groups",
    "answers_and_groups_async",
    "canonical",
    "equivalent",
    "extract_answer",
    "gold_answer",
    "group_answers",
    "matches_reference",
    "off_loop",
    "reference_problem",
    "start_workers",
]

log = logging.getLogger("winnow.answers")
T = TypeVar("T")

REL_TOL = 1e-6  # relative tolerance for non-integer numeric answers
MAX_SYMBOLIC_CHARS = 200  # longer expressions are not read
ANSWER_DEADLINE = 2.0  # seconds a worker may spend on one symbolic answer (or comparison)
WORKERS = 2  # worker processes for the symbolic part
_WORKER_WAIT = 15.0  # seconds a call waits for a free worker (a flood queues, it is not served)
_MAX_ANSWER_CHARS = 1000  # longer "answers" (whole solutions) have no key: not even parsed
_MAX_TRIES = 8  # answer markers tried, from the last: bounds the work on pathological texts
_MAX_BARE_CHARS = 64  # a whole response this short may itself be the answer
_INLINE_MAX = 32  # off_loop: at most this many texts are tried inline on the event loop
_CACHE_SIZE = 8192

# ---------------------------------------------------------------------------------------------
# extraction

_UNICODE = str.maketrans(
    {"\u2212": "-", "\u2013": "-", "\u00d7": "*", "\u22c5": "*", "\u00f7": "/", "\u2009": " "}
)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# "... the answer is X" anywhere; "Answer: X" only at a line start or after "the"/"final", so that
# "let me answer: first, ..." is not read as an answer.
_ANSWER_RE = re.compile(
    r"(?:\banswer[*_ \t]*is\b|(?:^[ \t*#_>-]*|\bthe[ \t]+|\bfinal[ \t]+)(?:final[ \t]+)?"
    r"answer[*_ \t]*:)[*_:\s]*",
    re.IGNORECASE | re.MULTILINE,
)
_GSM8K_RE = re.compile(r"####[ \t]*([^\n]*)")
_SENTENCE_END_RE = re.compile(r"(?<!\d)\.(?!\d)|\.(?=\s|$)|\n")
# A number: optional sign, thousands groups or plain digits, optional decimals, optional "/den".
# Not preceded by a word character or a dot, nor by a hyphen glued to a letter (COVID-19).
# A LaTeX fraction of integers (\frac{3}{4}, \dfrac34) counts as one number.
_NUMBER_RE = re.compile(
    r"-?\\[dt]?frac(?:\{\s*\d+\s*\}\s*\{\s*\d+\s*\}|\d\d)"
    r"|(?<![\w.])(?<![A-Za-z]-)"
    r"[-+]?(?:\d{1,3}(?:,\d{3})+(?![\d])|\d+|(?=\.\d))(?:\.\d+)?(?:/\d+(?![\d.]))?"
)
_SPAN_LEAD = " \t\n*_$:"
_SPAN_TRAIL = " \t\n*_$.,;:!?"


def extract_answer(text: str) -> str | None:
    """The final answer of a model response (see the module docstring), or None."""
    if not text:
        return None
    text = text.translate(_UNICODE)
    finders: tuple[Callable[[str], str | None], ...] = (
        _last_boxed,
        _last_answer_clause,
        _last_gsm8k_marker,
        _bare_answer,
        _last_number,
    )
    for finder in finders:
        answer = finder(text)
        if answer:
            return answer
    return None


def _last_boxed(text: str) -> str | None:
    """The content of the last complete ``\\boxed{...}``; truncated ones are skipped."""
    for match in reversed(list(_BOXED_RE.finditer(text))[-_MAX_TRIES:]):
        group = _read_group(text[: match.end() + _MAX_ANSWER_CHARS], match.end())
        if group is not None and group[0].strip():
            return _clean_span(group[0])
    return None


def _last_answer_clause(text: str) -> str | None:
    for match in reversed(list(_ANSWER_RE.finditer(text))[-_MAX_TRIES:]):
        clause = text[match.end() : match.end() + _MAX_ANSWER_CHARS]
        end = _SENTENCE_END_RE.search(clause)
        clause = _clean_span(clause[: end.start()] if end else clause)
        if not clause:
            continue
        if _reads_as_answer(clause):
            return clause
        number = _NUMBER_RE.search(clause)
        if number:
            return number.group()
    return None


def _last_gsm8k_marker(text: str) -> str | None:
    matches = _GSM8K_RE.findall(text)
    if not matches:
        return None
    line = _clean_span(matches[-1])
    if _reads_as_answer(line):
        return line
    number = _NUMBER_RE.search(line)
    return number.group() if number else None


def _bare_answer(text: str) -> str | None:
    """The whole response, when it is one short line that reads as an answer."""
    stripped = _clean_span(text)
    if len(stripped) > _MAX_BARE_CHARS or "\n" in stripped:
        return None
    return stripped if _reads_as_answer(stripped) else None


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER_RE.finditer(text):  # noqa: B007 - we want the last match
        pass
    return last.group() if last else None


def _clean_span(span: str) -> str:
    """Strip markdown emphasis, ``$`` delimiters and trailing punctuation around an answer."""
    span = span.strip().lstrip(_SPAN_LEAD).rstrip(_SPAN_TRAIL)
    for opening, closing in (("\\(", "\\)"), ("\\[", "\\]")):
        if span.startswith(opening) and span.endswith(closing):
            span = span[len(opening) : -len(closing)]
    return span.strip().lstrip(_SPAN_LEAD).rstrip(_SPAN_TRAIL)


def _read_group(text: str, start: int) -> tuple[str, int] | None:
    """Read one LaTeX argument at ``start``: ``{...}`` (balanced), ``\\cmd`` or one character.

    Returns the argument (without braces) and the index after it; None if braces don't close.
    """
    i = start
    while i < len(text) and text[i] in " \t":
        i += 1
    if i >= len(text):
        return None
    if text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j], j + 1
        return None
    if text[i] == "\\":
        command = re.match(r"\\[A-Za-z]+", text[i:])
        if command:
            return command.group(), i + command.end()
    return text[i], i + 1


# ---------------------------------------------------------------------------------------------
# canonical keys


@dataclass(frozen=True, slots=True)
class _Value:
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
    node: answer_expr.Node


class AnswerError(ValueError):
    """A reference has no gold answer; the message says why."""


class _NeedsWorker(Exception):
    """Raised instead of waiting for a worker when the caller runs on an event loop."""


class _Unavailable(Exception):
    """No worker could take the call in time (not cached: the next call tries again)."""


def canonical(answer: str) -> str | None:
    """A key shared by all spellings of one answer value; None when it can't be read, is past
    the bounds, or is not reduced to a value (``1 + 4``)."""
    value = _value(answer)
    return value.key if value is not None and value.reduced else None


def _value(answer: str) -> _Value | None:
    if not answer:
        return None
    try:
        value = _analyse(answer)
    except _Unavailable as exc:
        log.warning("answer %r not read: %s", answer[:80], exc)
        return None
    return value if isinstance(value, _Value) else None


@lru_cache(maxsize=_CACHE_SIZE)
def _form(answer: str) -> Fraction | _Expression | None:
    """The in-process reading of an answer: a plain number, a well-formed expression, or None.
    Grammar only, nothing is evaluated: microseconds."""
    if len(answer) > _MAX_ANSWER_CHARS:
        return None
    plain = _to_plain(answer.translate(_UNICODE))
    if plain is None:
        return None
    plain = _drop_assignment(plain)
    if plain is None:
        return None
    number = _parse_number(_drop_number_parens(plain))
    if number is not None:
        return number
    if len(plain) > MAX_SYMBOLIC_CHARS or _EXPONENT_NOTATION_RE.search(plain):
        return None  # 1e999999 is no product with Euler's number
    toks = answer_expr.tokens(plain)
    node = answer_expr.parse(toks) if toks else None
    if node is None or toks is None:
        return None
    return _Expression(_sympy_source(toks), node)


def _reads_as_answer(span: str) -> bool:
    """Whether an extracted span is an answer, as grammar (its value may still be refused)."""
    return _form(span) is not None


@lru_cache(maxsize=_CACHE_SIZE)
def _analyse(answer: str) -> _Value | _Refused | None:
    form = _form(answer)
    if form is None:
        return None
    if isinstance(form, Fraction):
        return _rational_value(form)
    try:
        reading = answer_expr.read(form.node)
    except answer_expr.Refused as exc:
        return _Refused(str(exc))
    except ZeroDivisionError:
        return None  # 1/0 has no value
    except (ArithmeticError, ValueError, RecursionError) as exc:  # a gap in the estimates
        log.warning("answer %r not bounded (%r), refused", answer[:80], exc)
        return _Refused("it could not be bounded")
    if reading.number is not None:
        return _rational_value(reading.number, reduced=reading.reduced)
    try:
        result = _call_worker("value", form.source, reading.cancel)
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
    return _Value(key, source=form.source, approx=approx, reduced=reading.reduced)


_CONVERTED_FRAC_RE = re.compile(r"([+-]?)\s*\(\(\s*([+-]?[\d.]+)\s*\)/\(\s*([+-]?[\d.]+)\s*\)\)")


def _drop_number_parens(s: str) -> str:
    """``-((3)/(4))`` (a converted ``-\\frac34``) -> ``-3/4``, so that it reads as a number."""
    frac = _CONVERTED_FRAC_RE.fullmatch(s)
    if frac is None:
        return s
    sign, numerator, denominator = frac.groups()
    if numerator.startswith("-") and sign == "-":
        sign, numerator = "", numerator[1:]
    elif numerator.startswith("-") or sign == "-":
        sign, numerator = "-", numerator.lstrip("+-")
    return f"{sign}{numerator.lstrip('+')}/{denominator}"


def _rational_value(number: Fraction, reduced: bool = True) -> _Value:
    try:
        approx: float | None = float(number)
    except OverflowError:
        approx = None
    return _Value(_fraction_key(number), number=number, approx=approx, reduced=reduced)


def _fraction_key(value: Fraction) -> str:
    return str(value)  # "3/4", "-2", "0": Fraction is always reduced, with the sign on top


_LATEX_DROP_RE = re.compile(
    r"\\left(?![A-Za-z])|\\right(?![A-Za-z])|\\displaystyle|\\[!,;: ]|\\q?quad"
    r"|\^\s*\{?\s*\\circ\s*\}?|\\circ|\\%|%|\\\$|\$|\\[()\[\]]|°|€|£"
)
_LATEX_UNIT_RE = re.compile(
    r"\\(?:text|textrm|mathrm|mbox|operatorname)\s*\{([^{}]*)\}(?:\^\{?\d+\}?)?"
)
_LATEX_UNWRAP_RE = re.compile(r"\\(?:textbf|mathbf|boldsymbol|bf|textit|mathit)\s*\{([^{}]*)\}")
_LATEX_SIMPLE = {
    r"\cdot": "*",
    r"\times": "*",
    r"\div": "/",
    r"\pi": " pi ",
    r"\infty": " oo ",
    r"\approx": "=",
    r"\ln": " ln ",
    r"\log": " log ",
    r"\sin": " sin ",
    r"\cos": " cos ",
    r"\tan": " tan ",
    r"\exp": " exp ",
}
_LATEX_SIMPLE_RE = re.compile(
    "|".join(re.escape(k) + r"(?![A-Za-z])" for k in sorted(_LATEX_SIMPLE, key=len, reverse=True))
)
_FRAC_RE = re.compile(r"\\[dtc]?frac(?![A-Za-z])")
_SQRT_RE = re.compile(r"\\sqrt(?![A-Za-z])")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_WORD_UNITS_RE = re.compile(r"(.*?\d)\s+[A-Za-z]{2,}\.?(?:\s+[A-Za-z]{2,}\.?)*")


def _to_plain(answer: str) -> str | None:
    """LaTeX and decoration to plain ``sympy``-style text; None if a LaTeX command is left."""
    s = answer.strip().replace("**", "").replace("{,}", ",")
    s = _LATEX_DROP_RE.sub("", s)
    s = _LATEX_UNWRAP_RE.sub(r"\1", s)
    s = _drop_text_units(s)
    s = _LATEX_SIMPLE_RE.sub(lambda m: _LATEX_SIMPLE[m.group()], s)
    unboxed = _replace_command(s, _BOXED_RE, 1, lambda a: f" {a[0]} ")
    fractions = unboxed and _replace_command(unboxed, _FRAC_RE, 2, lambda a: f"(({a[0]})/({a[1]}))")
    roots = fractions and _replace_sqrt(fractions)
    if not roots or "\\" in roots:
        return None
    s = roots.replace("{", "(").replace("}", ")")
    s = _THOUSANDS_RE.sub("", s)
    s = " ".join(s.split()).strip().rstrip(".").strip()
    unit = _WORD_UNITS_RE.fullmatch(s)
    if unit:  # "12 apples", "3.5 cm"
        s = unit.group(1)
    return s or None


def _drop_text_units(s: str) -> str:
    """``5\\text{ cm}^2`` -> ``5``; a lone ``\\text{(B)}`` keeps its content."""
    without = _LATEX_UNIT_RE.sub("", s)
    if re.search(r"\d", without):
        return without
    return _LATEX_UNIT_RE.sub(r"\1", s)


def _replace_command(
    s: str, pattern: re.Pattern[str], arity: int, render: Callable[[list[str]], str]
) -> str | None:
    """Replace every ``\\cmd{a}{b}`` (any nesting, innermost arguments converted too)."""
    for _ in range(64):  # bounded: each round removes one command
        match = pattern.search(s)
        if match is None:
            return s
        args: list[str] = []
        end = match.end()
        for _ in range(arity):
            group = _read_group(s, end)
            if group is None:
                return None
            args.append(group[0])
            end = group[1]
        s = s[: match.start()] + render(args) + s[end:]
    return None


def _replace_sqrt(s: str) -> str | None:
    """``\\sqrt{x}`` -> ``sqrt(x)``, ``\\sqrt[3]{x}`` -> ``(x)^(1/(3))``."""
    for _ in range(64):
        match = _SQRT_RE.search(s)
        if match is None:
            return s
        end = match.end()
        root = None
        if end < len(s) and s[end] == "[":
            close = s.find("]", end)
            if close < 0:
                return None
            root, end = s[end + 1 : close], close + 1
        group = _read_group(s, end)
        if group is None:
            return None
        body = group[0]
        rendered = f"sqrt({body})" if root is None else f"(({body})^(1/({root})))"
        s = s[: match.start()] + rendered + s[group[1] :]
    return None


_ASSIGNMENT_RE = re.compile(r"^[A-Za-z](?:_\(?\w+\)?)?\s*=\s*([^=]+)$")
_ARITHMETIC_RE = re.compile(r"[\d\s+\-*/^().]+")


def _drop_assignment(s: str) -> str | None:
    """``x = 3`` -> ``3``; ``7 + 5 = 12`` -> ``12``; other equations -> None."""
    if "=" not in s:
        return s
    assignment = _ASSIGNMENT_RE.match(s)
    if assignment:
        return assignment.group(1).strip()
    *sides, last = (side.strip() for side in s.split("="))
    if all(_ARITHMETIC_RE.fullmatch(side) for side in sides) and _parse_number(last) is not None:
        return last
    return None


_DECIMAL_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?")
_FRACTION_RE = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))\s*/\s*(\d+\.?\d*|\.\d+)")


def _parse_number(s: str) -> Fraction | None:
    """Exact value of a decimal (``-1.50``, ``.5``, ``2e3``) or a simple fraction (``3/4``)."""
    if _DECIMAL_RE.fullmatch(s):
        return Fraction(s)
    fraction = _FRACTION_RE.fullmatch(s)
    if fraction:
        denominator = Fraction(fraction.group(2))
        if denominator:
            return Fraction(fraction.group(1)) / denominator
    return None


# ---------------------------------------------------------------------------------------------
# expressions: the sympy source, the worker pool

_EXPONENT_NOTATION_RE = re.compile(r"\d[eE][+-]?\d")


def _sympy_source(toks: Sequence[str]) -> str:
    """The worker's input: single-letter variables renamed ``v_x`` (no clash with sympy names
    such as ``S``, ``N`` or ``E``); function and constant names as they are."""
    out = []
    for token in toks:
        if token[0].isalpha():
            out.append(f" {token} " if len(token) > 1 or token in "ei" else f" v_{token} ")
        else:
            out.append(token)
    return "".join(out).strip()


_local = threading.local()
_pool_lock = threading.Lock()
_pool: sandbox.Pool | None = None
_executor: ThreadPoolExecutor | None = None


def _workers() -> sandbox.Pool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = sandbox.Pool(
                "winnow.answer_sympy", size=WORKERS, deadline=ANSWER_DEADLINE, wait=_WORKER_WAIT
            )
            atexit.register(_pool.close)
        return _pool


def start_workers(wait: float | None = None) -> bool:
    """Start the worker processes (in the background); with ``wait``, wait until one is ready
    (at most that many seconds) and say whether one is."""
    pool = _workers()
    pool.start()
    return pool.ready(wait) if wait is not None else True


def _call_worker(function: str, *args: Any) -> Any:
    if getattr(_local, "inline", False):
        raise _NeedsWorker
    try:
        return _workers().call(function, *args)
    except sandbox.PoolUnavailable as exc:
        raise _Unavailable(str(exc)) from None


async def off_loop(fn: Callable[..., T], *args: Any, inline: bool = True) -> T:
    """``fn(*args)`` for async code: inline when it needs no worker (plain numbers: no thread
    hop), else in a thread of this module's own pool, so the event loop never waits for sympy.
    ``inline=False`` goes to the thread at once (large batches)."""
    if inline:
        _local.inline = True
        try:
            return fn(*args)
        except _NeedsWorker:
            pass
        finally:
            _local.inline = False
    global _executor
    with _pool_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(2 * WORKERS, thread_name_prefix="winnow-answers")
    return await asyncio.get_running_loop().run_in_executor(_executor, fn, *args)


# ---------------------------------------------------------------------------------------------
# equivalence and grouping


def equivalent(a: str, b: str) -> bool:
    """Whether two answers (already extracted) denote the same value; an unreadable, refused or
    unreduced answer (``1 + 4``) equals nothing."""
    va, vb = _value(a), _value(b)
    if va is None or vb is None or not (va.reduced and vb.reduced):
        return False
    return _same(va, vb)


def _same(a: _Value, b: _Value) -> bool:
    if a.key == b.key:
        return True
    try:
        return _close(a, b)
    except _Unavailable as exc:
        log.warning("answers not compared: %s", exc)
        return False


def _close(a: _Value, b: _Value) -> bool:
    if a.approx is not None and b.approx is not None:
        return _numbers_close(a, b)
    if a.source is None and b.source is None:
        return False  # rationals too large for floats, and unequal
    return _sympy_equal(a, b) if a.key <= b.key else _sympy_equal(b, a)


def _numbers_close(a: _Value, b: _Value) -> bool:
    """Exact for two integers, else within :data:`REL_TOL` (rounded decimals, 1/3 ~ 0.3333333)."""
    if a.key == b.key:
        return True
    if (a.is_integer and b.is_integer) or a.approx is None or b.approx is None:
        return False
    return math.isclose(a.approx, b.approx, rel_tol=REL_TOL)


@lru_cache(maxsize=_CACHE_SIZE)
def _sympy_equal(a: _Value, b: _Value) -> bool:
    """Numeric identity test in a worker: ``a - b`` vanishes at a few probe points."""
    try:
        return bool(_call_worker("equal", _source_of(a), _source_of(b)))
    except (sandbox.DeadlineExceeded, sandbox.WorkerError):
        return False


def _source_of(value: _Value) -> str:
    if value.source is not None:
        return value.source
    assert value.number is not None
    return f"({value.number.numerator})/({value.number.denominator})"


def group_answers(texts: Sequence[str]) -> list[int | None]:
    """Group ids per response; see :func:`answers_and_groups`."""
    return answers_and_groups(texts)[1]


def answers_and_groups(texts: Sequence[str]) -> tuple[list[str | None], list[int | None]]:
    """Each response's extracted answer and its group id (one extraction per response).

    Equal answers share an id, unreadable ones (and refused or unreduced ones) get None (answer
    and group alike).

    Ids are 0, 1, ... in order of first appearance. Grouping is by canonical key (O(n)); the
    only fallback between distinct keys is a merge of numerically close real constants (sort by
    value, compare neighbours: O(k log k) for k distinct keys), so ``3`` and ``3.0000001``, or
    ``\\sqrt{2}`` and ``1.41421356``, share a group; closeness chains (a~b, b~c merge a and c).
    Keys with variables are not compared pairwise (a sympy call per pair is too slow per
    request); their normal form already unites the spellings models write.
    """
    answers = [extract_answer(t) for t in texts]
    values = []
    for answer in answers:
        value = _value(answer) if answer else None
        values.append(value if value is not None and value.reduced else None)
    parent: dict[str, str] = {}
    numeric: dict[str, _Value] = {}
    for value in values:
        if value is not None:
            parent.setdefault(value.key, value.key)
            if value.approx is not None:
                numeric[value.key] = value

    def find(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    ordered = sorted(numeric.values(), key=lambda value: value.approx or 0.0)
    for a, b in itertools.pairwise(ordered):
        if _numbers_close(a, b):
            parent[find(b.key)] = find(a.key)

    ids: dict[str, int] = {}
    groups: list[int | None] = []
    for value in values:
        if value is None:
            groups.append(None)
        else:
            groups.append(ids.setdefault(find(value.key), len(ids)))
    return [a if g is not None else None for a, g in zip(answers, groups, strict=True)], groups


async def answers_and_groups_async(
    texts: Sequence[str],
) -> tuple[list[str | None], list[int | None]]:
    """:func:`answers_and_groups` for async code (see :func:`off_loop`)."""
    return await off_loop(answers_and_groups, list(texts), inline=len(texts) <= _INLINE_MAX)


# ---------------------------------------------------------------------------------------------
# references (gold answers from clients)


def gold_answer(reference: str) -> str:
    """The gold answer of a reference: the reference itself when it reads as an answer, else the
    answer extracted from it (a worked solution ending in ``#### 72``). Unlike a model's answer,
    a reference may be an unreduced calculation (``2 + 3`` is 5: a client's gold answer is
    trusted). Raises :class:`AnswerError` saying why there is none: unreadable, or past the
    bounds (the reason), which a server turns into a 400."""
    for candidate, whole in ((reference, True), (extract_answer(reference), False)):
        if not candidate:
            continue
        try:
            value = _analyse(candidate)
        except _Unavailable as exc:
            raise AnswerError(f"the reference could not be read now ({exc}); retry") from None
        if isinstance(value, _Value):
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
        form = _form(candidate) if candidate else None
        if isinstance(form, _Expression):
            try:
                answer_expr.read(form.node)
            except answer_expr.Refused as exc:
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
    va = _value(answer) if answer else None
    if va is None or not va.reduced:
        return False
    vb = _value(gold)
    return vb is not None and _same(va, vb)

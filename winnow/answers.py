"""Final answers of model responses: extraction, canonical keys and equivalence.

One module shared by every voting strategy (majority vote, best-of-majority, ...) and by the
rule-based verifier, so that "the answer" means the same thing everywhere.

Extraction (:func:`extract_answer`), in priority order:

1. the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces, nesting allowed);
2. the last "the (final) answer is ..." / "answer: ..." clause (case-insensitive), up to the end
   of its sentence. The clause is returned as text when it reads as an answer (a number, a
   fraction, ``x = 3``, ``\\frac{1}{2}``, ``2x+1``, ``12 apples``); otherwise the first number in
   it is ("the number after the last 'answer is'"); a clause with no number at all ("the answer is
   unclear") is ignored and the lower-priority rules decide;
3. GSM8K's last ``#### n``;
4. the whole response, when it is a single short line that reads as an answer (``\\frac{1}{2}``);
5. the last number *anywhere* in the text, not only in the last line: chatty models often end
   with "I hope this helps!" after the result. ``3/4`` and ``\\frac{3}{4}`` count as numbers.
   Numbers glued to a preceding letter (``mp3``, ``H2O``, ``COVID-19``) are not numbers; a
   number followed by a unit (``12kg``, ``3rd``) is.

Canonical keys (:func:`canonical`): exact rationals are written as reduced fractions (``"3/4"``,
``"-2"``), so every spelling of one value gets one key: ``0.75``, ``.75``, ``3/4``, ``\\dfrac34``
all give ``"3/4"``; ``1,000`` and ``1000.0`` give ``"1000"``; ``-0`` gives ``"0"``. Percent
signs, degree marks, currency signs, ``\\text{...}`` units and trailing unit words
(``12 apples``) are dropped: ``50%`` is ``50``, as GSM8K/MATH references write it. ``x = 3`` is
``3`` when the left side is a single variable; an arithmetic chain ``7 + 5 = 12`` is its last
side when that is a number and the other sides are plain arithmetic. Anything else goes through
sympy (guarded: at most 200 characters, a whitelist of characters and names, bounded exponents,
every exception caught) and is keyed by ``srepr`` of its simplified, cancelled form, so ``2x+1``
and ``1+2*x`` share a key. Unparseable answers have no key (``None``). Equations, tuples,
intervals, sets, words and multi-letter variables (``xy``) are not understood; single letters
are variables, so a multiple-choice ``(B)`` is the symbol ``B``.

Equivalence (:func:`equivalent`): equal keys; or numerically close values (relative tolerance
:data:`REL_TOL`) unless both are integers, which compare exactly (so ``443991300155202`` and
``443991300155203`` stay different, while ``3`` and ``3.0000001`` match); or, for expressions
with variables, agreement at a few fixed probe points (a numeric ``a - b == 0``: milliseconds,
where ``simplify(a - b)`` can take seconds, and it sees trig/log identities).

No wall-clock timeout guards sympy: signals only work in the main thread (the verifier runs in a
worker thread) and a process pool would cost more than the work. The length cap, the name
whitelist, the exponent bounds and a bound on what ``cancel`` may multiply out keep every parse
to milliseconds instead (``simplify`` is never called); results are cached.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sympy

__all__ = [
    "MAX_SYMBOLIC_CHARS",
    "REL_TOL",
    "canonical",
    "equivalent",
    "extract_answer",
    "group_answers",
]

REL_TOL = 1e-6  # relative tolerance for non-integer numeric answers
MAX_SYMBOLIC_CHARS = 200  # longer answers are not handed to sympy
_MAX_ANSWER_CHARS = 1000  # longer "answers" (whole solutions) have no key: not even parsed
_MAX_TRIES = 8  # answer markers tried, from the last: bounds the work on pathological texts
_MAX_BARE_CHARS = 64  # a whole response this short may itself be the answer
_MAX_NUMERIC_EXPONENT = 1000  # 2^1000 is cheap; 9^9^9 is not
_MAX_EXPANSION = 12  # total power of sums cancel() may expand: (a+b+c+d)^16 takes seconds
_MAX_FREE_SYMBOLS = 4
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
        if canonical(clause) is not None:
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
    if canonical(line) is not None:
        return line
    number = _NUMBER_RE.search(line)
    return number.group() if number else None


def _bare_answer(text: str) -> str | None:
    """The whole response, when it is one short line that reads as an answer."""
    stripped = _clean_span(text)
    if len(stripped) > _MAX_BARE_CHARS or "\n" in stripped:
        return None
    return stripped if canonical(stripped) is not None else None


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
    """A parsed answer: its key, its exact rational value or its sympy expression, and its
    floating-point value when it is a real constant (for tolerant comparisons)."""

    key: str
    number: Fraction | None = None
    expr: Any = None  # sympy.Expr when the value is not rational
    approx: float | None = None

    @property
    def is_integer(self) -> bool:
        return self.number is not None and self.number.denominator == 1


def canonical(answer: str) -> str | None:
    """A key shared by all spellings of one answer value; None when it can't be read."""
    value = _analyse(answer) if answer else None
    return value.key if value else None


@lru_cache(maxsize=_CACHE_SIZE)
def _analyse(answer: str) -> _Value | None:
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
        return _rational_value(number)
    return _sympy_value(plain)


_CONVERTED_FRAC_RE = re.compile(r"([+-]?)\s*\(\(\s*([+-]?[\d.]+)\s*\)/\(\s*([+-]?[\d.]+)\s*\)\)")


def _drop_number_parens(s: str) -> str:
    """``-((3)/(4))`` (a converted ``-\\frac34``) -> ``-3/4``, so that it skips sympy."""
    frac = _CONVERTED_FRAC_RE.fullmatch(s)
    if frac is None:
        return s
    sign, numerator, denominator = frac.groups()
    if numerator.startswith("-") and sign == "-":
        sign, numerator = "", numerator[1:]
    elif numerator.startswith("-") or sign == "-":
        sign, numerator = "-", numerator.lstrip("+-")
    return f"{sign}{numerator.lstrip('+')}/{denominator}"


def _rational_value(number: Fraction) -> _Value:
    try:
        approx: float | None = float(number)
    except OverflowError:
        approx = None
    return _Value(_fraction_key(number), number=number, approx=approx)


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
# sympy

_EXPONENT_NOTATION_RE = re.compile(r"\d[eE][+-]?\d")
_TOKEN_RE = re.compile(r"\d+\.?\d*|\.\d+|[A-Za-z]+|[-+*/^()]|\s+")
_FUNCTIONS = ("sqrt", "ln", "log", "exp", "sin", "cos", "tan")
_CONSTANTS = ("pi", "oo")


@lru_cache(maxsize=1)
def _sympy_env() -> tuple[dict[str, Any], dict[str, Any], tuple[Any, ...]]:
    """Globals, locals and transformations for ``parse_expr``; sympy is imported on first use.

    ``parse_expr`` evaluates Python code, so the input is tokenised against a whitelist first
    (digits, single letters, a few function names, ``+-*/^()``) and ``eval`` sees no builtins.
    """
    import sympy
    from sympy.parsing import sympy_parser as sp

    global_dict: dict[str, Any] = {
        name: getattr(sympy, name)
        for name in ("Integer", "Float", "Rational", "Symbol", "Function", "Add", "Mul", "Pow")
    }
    global_dict["__builtins__"] = {}
    local_dict: dict[str, Any] = {
        "sqrt": sympy.sqrt,
        "ln": sympy.log,
        "log": sympy.log,
        "exp": sympy.exp,
        "sin": sympy.sin,
        "cos": sympy.cos,
        "tan": sympy.tan,
        "pi": sympy.pi,
        "oo": sympy.oo,
        "e": sympy.E,
        "i": sympy.I,
    }
    for letter in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        local_dict[f"v_{letter}"] = sympy.Symbol(letter)
    transformations = (
        *sp.standard_transformations,
        sp.implicit_multiplication,
        sp.convert_xor,
        sp.rationalize,
    )
    return global_dict, local_dict, transformations


def _to_sympy_source(s: str) -> str | None:
    """Whitelisted tokens only; single-letter variables are renamed ``v_x`` (no clash with
    sympy names such as ``S``, ``N`` or ``E``). Multi-letter unknown words reject the input."""
    if len(s) > MAX_SYMBOLIC_CHARS or _EXPONENT_NOTATION_RE.search(s):
        return None  # 1e999999 is no product with Euler's number
    tokens = _TOKEN_RE.findall(s)
    if sum(map(len, tokens)) != len(s):
        return None  # a character outside the whitelist
    out = []
    for token in tokens:
        if token[0].isalpha():
            if token in _FUNCTIONS or token in _CONSTANTS or token in ("e", "i"):
                out.append(f" {token} ")
            elif len(token) == 1:
                out.append(f" v_{token} ")
            else:
                return None
        else:
            out.append(token)
    return "".join(out)


def _sympy_value(s: str) -> _Value | None:
    source = _to_sympy_source(s)
    if source is None or not source.strip():
        return None
    try:
        expr = _parse_guarded(source)
        if expr is None:
            return None
        return _value_of(expr)
    except Exception:  # sympy raises a zoo of types (and RecursionError) on odd input
        return None


def _parse_guarded(source: str) -> sympy.Expr | None:
    """Parse unevaluated, check the size guards, then evaluate."""
    import sympy
    from sympy.parsing.sympy_parser import parse_expr

    global_dict, local_dict, transformations = _sympy_env()
    kwargs = {"local_dict": local_dict, "global_dict": global_dict}
    raw = parse_expr(source, transformations=transformations, evaluate=False, **kwargs)
    if not isinstance(raw, sympy.Expr) or not _within_guards(raw):
        return None
    expr = parse_expr(source, transformations=transformations, **kwargs)
    return expr if isinstance(expr, sympy.Expr) else None


def _within_guards(expr: sympy.Expr) -> bool:
    import sympy

    if len(expr.free_symbols) > _MAX_FREE_SYMBOLS:
        return False
    for node in sympy.preorder_traversal(expr):
        if not isinstance(node, sympy.Pow):
            continue
        exponent = node.args[1]
        if exponent.free_symbols:
            continue
        if any(p.args[1] != -1 for p in exponent.atoms(sympy.Pow)):  # x^-1 is a division
            return False  # a power tower such as 9^9^9
        if abs(exponent.doit()) > _MAX_NUMERIC_EXPONENT:
            return False
    return True


def _expansion_cost(expr: sympy.Expr) -> int:
    """How much ``cancel`` would multiply out: the summed integer powers of compound bases with
    variables (sums, and functions such as ``sin(x)``, which ``cancel`` treats as variables)."""
    import sympy

    cost = 0
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Pow) and node.args[1].is_Integer:
            base, exponent = node.args
            if not base.is_Symbol and base.free_symbols:
                cost += abs(int(exponent))
        elif isinstance(node, sympy.Mul):
            cost += sum(1 for f in node.args if isinstance(f, sympy.Add) and f.free_symbols)
    return cost


def _value_of(expr: sympy.Expr) -> _Value | None:
    """Key a parsed expression. No ``simplify`` (it takes seconds on some trig inputs): sympy's
    automatic evaluation already orders terms and folds constants (``sqrt(8)`` is
    ``2*sqrt(2)``), and ``cancel`` puts rational functions in a normal form (``x(x+1)`` is
    ``x^2+x``). Identities beyond that are left to :func:`equivalent`'s numeric check."""
    import sympy

    if expr.has(sympy.zoo, sympy.nan):
        return None
    if expr.is_Rational:
        return _rational_value(Fraction(int(expr.p), int(expr.q)))
    if expr.free_symbols:
        if _expansion_cost(expr) <= _MAX_EXPANSION:
            expr = sympy.cancel(expr)
        return _Value(sympy.srepr(expr), expr=expr)
    approx = complex(sympy.N(expr))
    real = approx.real if approx.imag == 0 and math.isfinite(approx.real) else None
    return _Value(sympy.srepr(expr), expr=expr, approx=real)


# ---------------------------------------------------------------------------------------------
# equivalence and grouping


def equivalent(a: str, b: str) -> bool:
    """Whether two answers (already extracted) denote the same value."""
    va, vb = _analyse(a), _analyse(b)
    if va is None or vb is None:
        return False
    return va.key == vb.key or _close(va, vb)


def _close(a: _Value, b: _Value) -> bool:
    if a.approx is not None and b.approx is not None:
        return _numbers_close(a, b)
    if a.expr is None and b.expr is None:
        return False  # rationals too large for floats, and unequal
    return _sympy_equal(a, b) if a.key <= b.key else _sympy_equal(b, a)


def _numbers_close(a: _Value, b: _Value) -> bool:
    """Exact for two integers, else within :data:`REL_TOL` (rounded decimals, 1/3 ~ 0.3333333)."""
    if a.key == b.key:
        return True
    if (a.is_integer and b.is_integer) or a.approx is None or b.approx is None:
        return False
    return math.isclose(a.approx, b.approx, rel_tol=REL_TOL)


# Where two expressions with variables are compared: irrational-looking, positive (log and sqrt
# stay real), distinct per variable. Agreement at all points is taken as identity.
_PROBE_POINTS = ((0.5772156649, 1.6180339887, 2.7182818285, 0.3183098862),
                 (1.4142135624, 0.6931471806, 1.7320508076, 2.2360679775),
                 (2.5029078751, 1.2020569032, 0.9159655942, 1.3247179572))  # fmt: skip


@lru_cache(maxsize=_CACHE_SIZE)
def _sympy_equal(a: _Value, b: _Value) -> bool:
    """Numeric identity test: ``a - b`` vanishes at a few probe points. Unlike ``simplify(a - b)``
    it costs milliseconds whatever the expression, and it sees trig and log identities."""
    import sympy

    try:
        ea = a.expr if a.expr is not None else sympy.Rational(a.number)
        eb = b.expr if b.expr is not None else sympy.Rational(b.number)
        variables = sorted(ea.free_symbols | eb.free_symbols, key=str)
        if len(variables) > _MAX_FREE_SYMBOLS:
            return False
        for point in _PROBE_POINTS if variables else _PROBE_POINTS[:1]:
            subs = dict(zip(variables, point, strict=False))
            va, vb = complex(ea.evalf(subs=subs)), complex(eb.evalf(subs=subs))
            if not _complex_close(va, vb):
                return False
        return True
    except Exception:
        return False


def _complex_close(a: complex, b: complex) -> bool:
    if not all(map(math.isfinite, (a.real, a.imag, b.real, b.imag))):
        return a == b
    scale = max(abs(a), abs(b))
    return abs(a - b) <= REL_TOL * scale + 1e-12


def group_answers(texts: Sequence[str]) -> list[int | None]:
    """Group ids per response; see :func:`answers_and_groups`."""
    return answers_and_groups(texts)[1]


def answers_and_groups(texts: Sequence[str]) -> tuple[list[str | None], list[int | None]]:
    """Each response's extracted answer and its group id (one extraction per response).

    Equal answers share an id, unreadable ones get None (answer and group alike).

    Ids are 0, 1, ... in order of first appearance. Grouping is by canonical key (O(n)); the
    only fallback between distinct keys is a merge of numerically close real constants (sort by
    value, compare neighbours: O(k log k) for k distinct keys), so ``3`` and ``3.0000001``, or
    ``\\sqrt{2}`` and ``1.41421356``, share a group; closeness chains (a~b, b~c merge a and c).
    Keys with variables are not compared pairwise (a sympy call per pair is too slow per
    request); their normal form already unites the spellings models write.
    """
    answers = [extract_answer(t) for t in texts]
    values = [_analyse(answer) if answer else None for answer in answers]
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

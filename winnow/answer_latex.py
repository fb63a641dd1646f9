"""From the LaTeX and prose of an answer span to plain arithmetic text: the text part of reading
an answer, before its grammar (:mod:`winnow.answer_grammar`) and its value (:mod:`winnow.answers`).

``\\frac{3}{4}`` becomes ``((3)/(4))``, ``\\sqrt{8}`` ``sqrt(8)``, ``2\\cdot 10^{3}`` ``2*10^(3)``;
decoration (``\\left``, ``$``, ``%``, degree marks, currency signs), ``\\text{...}`` units,
thousands separators and trailing unit words are dropped; ``x = 3`` is its right side. Text in,
text out: nothing here evaluates anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction

UNICODE = str.maketrans(
    {"\u2212": "-", "\u2013": "-", "\u00d7": "*", "\u22c5": "*", "\u00f7": "/", "\u2009": " "}
)
BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def read_group(text: str, start: int) -> tuple[str, int] | None:
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


_CONVERTED_FRAC_RE = re.compile(r"([+-]?)\s*\(\(\s*([+-]?[\d.]+)\s*\)/\(\s*([+-]?[\d.]+)\s*\)\)")


def drop_number_parens(s: str) -> str:
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


def to_plain(answer: str) -> str | None:
    """LaTeX and decoration to plain ``sympy``-style text; None if a LaTeX command is left."""
    s = answer.strip().replace("**", "").replace("{,}", ",")
    s = _LATEX_DROP_RE.sub("", s)
    s = _LATEX_UNWRAP_RE.sub(r"\1", s)
    s = _drop_text_units(s)
    s = _LATEX_SIMPLE_RE.sub(lambda m: _LATEX_SIMPLE[m.group()], s)
    unboxed = _replace_command(s, BOXED_RE, 1, lambda a: f" {a[0]} ")
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
            group = read_group(s, end)
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
        group = read_group(s, end)
        if group is None:
            return None
        body = group[0]
        rendered = f"sqrt({body})" if root is None else f"(({body})^(1/({root})))"
        s = s[: match.start()] + rendered + s[group[1] :]
    return None


_ASSIGNMENT_RE = re.compile(r"^[A-Za-z](?:_\(?\w+\)?)?\s*=\s*([^=]+)$")
_ARITHMETIC_RE = re.compile(r"[\d\s+\-*/^().]+")


def drop_assignment(s: str) -> str | None:
    """``x = 3`` -> ``3``; ``7 + 5 = 12`` -> ``12``; other equations -> None."""
    if "=" not in s:
        return s
    assignment = _ASSIGNMENT_RE.match(s)
    if assignment:
        return assignment.group(1).strip()
    *sides, last = (side.strip() for side in s.split("="))
    if all(_ARITHMETIC_RE.fullmatch(side) for side in sides) and parse_number(last) is not None:
        return last
    return None


_DECIMAL_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?")
_FRACTION_RE = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+))\s*/\s*(\d+\.?\d*|\.\d+)")


def parse_number(s: str) -> Fraction | None:
    """Exact value of a decimal (``-1.50``, ``.5``, ``2e3``) or a simple fraction (``3/4``)."""
    if _DECIMAL_RE.fullmatch(s):
        return Fraction(s)
    fraction = _FRACTION_RE.fullmatch(s)
    if fraction:
        denominator = Fraction(fraction.group(2))
        if denominator:
            return Fraction(fraction.group(1)) / denominator
    return None

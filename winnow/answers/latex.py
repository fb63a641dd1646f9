"""From the LaTeX and prose of an answer span to plain arithmetic text: the text part of reading
an answer, before its grammar (:mod:`winnow.answers.grammar`) and its value
(:mod:`winnow.answers.final`).

``\\frac{3}{4}`` becomes ``((3)/(4))``, ``\\sqrt{8}`` ``sqrt(8)``, ``2\\cdot 10^{3}`` ``2*10^(3)``;
decoration (``\\left``, ``$``, ``%``, degree marks, currency signs), ``\\text{...}`` units,
thousands separators and trailing unit words are dropped; ``x = 3`` is its right side. Text in,
text out: nothing here evaluates anything.

Everything here reads client or model text (up to MAX_ANSWER_CHARS), so everything runs in time
linear in its input, by construction: no pattern can match the same characters in two ways
(possessive quantifiers ``*+ ++ ?+``, or a quantifier followed by what it cannot match), so the
regex engine never tries a second split; the patterns that ``sub``/``search`` try at every
position start with a literal, and what they scan from there stops at the next brace or
non-space, so no character is scanned from many starts; and LaTeX commands are rewritten in one
pass over a linked list (:class:`_Chars`), not by rebuilding the string per command (see
:func:`_replace_sqrt` for its budget). ``tests/unit/test_answer_linear.py`` counts the steps of the
regex engine and of Python to check it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from fractions import Fraction

UNICODE = str.maketrans(
    {"\u2212": "-", "\u2013": "-", "\u00d7": "*", "\u22c5": "*", "\u00f7": "/", "\u2009": " "}
)
BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_COMMAND_RE = re.compile(r"\\[A-Za-z]++")
_BRACE_RE = re.compile(r"[{}]")
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")  # [A-Za-z]
_MAX_COMMANDS = 64  # commands rewritten per kind; more, and the answer is not read
_INDEX_WORK = 4  # per character: the budget of \sqrt[...] index walks (see _replace_sqrt)


def read_group(text: str, start: int, stop: int | None = None) -> tuple[str, int] | None:
    """Read one LaTeX argument at ``start``: ``{...}`` (balanced), ``\\cmd`` or one character,
    in ``text[:stop]``.

    Returns the argument (without braces) and the index after it; None if braces don't close.
    """
    end = len(text) if stop is None else min(stop, len(text))
    i = start
    while i < end and text[i] in " \t":
        i += 1
    if i >= end:
        return None
    if text[i] == "{":
        depth = 0
        for brace in _BRACE_RE.finditer(text, i, end):  # hops from brace to brace
            depth += 1 if brace.group() == "{" else -1
            if depth == 0:
                return text[i + 1 : brace.start()], brace.end()
        return None
    if text[i] == "\\":
        command = _COMMAND_RE.match(text, i, end)
        if command:
            return command.group(), command.end()
    return text[i], i + 1


_CONVERTED_FRAC_RE = re.compile(
    r"([+-]?+)\s*+\(\(\s*+([+-]?+[\d.]++)\s*+\)/\(\s*+([+-]?+[\d.]++)\s*+\)\)"
)


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
    r"|\^\s*+\{?+\s*+\\circ\s*+\}?|\\circ|\\%|%|\\\$|\$|\\[()\[\]]|°|€|£"
)
_LATEX_UNIT_RE = re.compile(
    r"\\(?:text|textrm|mathrm|mbox|operatorname)\s*+\{([^{}]*+)\}(?:\^\{?+\d++\}?)?"
)
_LATEX_UNWRAP_RE = re.compile(r"\\(?:textbf|mathbf|boldsymbol|bf|textit|mathit)\s*+\{([^{}]*+)\}")
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
_FRAC_NAMES = frozenset({"frac", "dfrac", "tfrac", "cfrac"})  # what _FRAC_RE matches
_BOXED_NAMES = frozenset({"boxed", "fbox"})  # what BOXED_RE matches
_SQRT_NAMES = frozenset({"sqrt"})  # what _SQRT_RE matches
_DIGIT_RE = re.compile(r"\d")
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# The unit words cannot contain a digit, so for each digit the lazy group tries, the rest scans
# only up to the next digit: linear. Possessive: a word is never split.
_WORD_UNITS_RE = re.compile(r"(.*?\d)\s++[A-Za-z]{2,}+\.?+(?:\s++[A-Za-z]{2,}+\.?+)*+")


def to_plain(answer: str) -> str | None:
    """LaTeX and decoration to plain ``sympy``-style text; None if a LaTeX command is left."""
    s = answer.strip().replace("**", "").replace("{,}", ",")
    s = _LATEX_DROP_RE.sub("", s)
    s = _LATEX_UNWRAP_RE.sub(r"\1", s)
    s = _drop_text_units(s)
    s = _LATEX_SIMPLE_RE.sub(lambda m: _LATEX_SIMPLE[m.group()], s)
    unboxed = _replace_command(s, BOXED_RE, _BOXED_NAMES, (" ", 0, " "))
    fractions = unboxed and _replace_command(
        unboxed, _FRAC_RE, _FRAC_NAMES, ("((", 0, ")/(", 1, "))")
    )
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
    if _DIGIT_RE.search(without):
        return without
    return _LATEX_UNIT_RE.sub(r"\1", s)


# ---------------------------------------------------------------------------------------------
# \cmd{a}{b} -> its rendering, for every command, in one pass
#
# The rule (what a loop of ``pattern.search(s)`` and ``s = s[:start] + render(args) + s[end:]``
# did): rewrite the leftmost command, its arguments read by :func:`read_group`; then the leftmost
# command of the result, and so on (nested commands inside the arguments too), at most
# _MAX_COMMANDS - 1 of them. Rebuilding the string per command costs O(k * n) for k commands;
# here the text is a linked list of characters, each ``{`` knows its ``}``, and the search
# resumes where the last rewrite began, so each command costs its own length: O(n + k).
# ``tests/unit/test_answer_linear.py`` checks the result against the string rebuild on random text.

_END = -1
Range = tuple[int, int] | None  # (first, last) node of an argument; None: empty
Template = tuple[str | int, ...]  # text, and the index of an argument to insert there


class _Chars:
    """A string as a doubly linked list of its characters (node 0 is the head, before the
    first), with the matching brace of each brace: a command is replaced in place, in time
    proportional to its own length."""

    __slots__ = ("char", "mate", "next", "prev")

    def __init__(self, s: str) -> None:
        n = len(s)
        self.char = ["", *s]
        self.next = [*range(1, n + 1), _END]
        self.prev = [*range(-1, n)]
        self.mate = [_END] * (n + 1)
        self._pair(m.start() + 1 for m in _BRACE_RE.finditer(s))

    def _pair(self, braces: Iterable[int]) -> None:
        """Pair each ``{`` of ``braces`` (nodes, in order) with its ``}``: what
        :func:`read_group` finds by counting depth; an unpaired brace has no mate."""
        char, mate = self.char, self.mate
        stack: list[int] = []
        for node in braces:
            mate[node] = _END
            if char[node] == "{":
                stack.append(node)
            elif stack:
                opening = stack.pop()
                mate[opening], mate[node] = node, opening

    def nodes(self) -> Iterator[int]:
        nxt = self.next
        node = nxt[0]
        while node != _END:
            yield node
            node = nxt[node]

    def text(self) -> str:
        char = self.char
        return "".join([char[node] for node in self.nodes()])

    def after_letters(self, node: int) -> tuple[str, int, int]:
        """The run of ``[A-Za-z]`` from ``node`` on, its last node and the node after it."""
        char, nxt = self.char, self.next
        letters = []
        last = _END
        while node != _END and char[node] in _LETTERS:
            letters.append(char[node])
            last, node = node, nxt[node]
        return "".join(letters), last, node

    def find_command(self, node: int, names: frozenset[str]) -> tuple[int, int] | None:
        """The first ``\\name`` (not followed by a letter) at or after ``node``: the node of
        its backslash and the node after its name; None if there is none."""
        char, nxt = self.char, self.next
        while node != _END:
            if char[node] == "\\":
                name, _, after = self.after_letters(nxt[node])
                if name in names:
                    return node, after
                node = after  # letters of a command start nothing
            else:
                node = nxt[node]
        return None

    def read_group(self, node: int) -> tuple[Range, int, bool] | None:
        """:func:`read_group` at ``node``: the argument, the node after it, and whether it is a
        single character; None if braces don't close (or nothing is left)."""
        char, nxt = self.char, self.next
        while node != _END and char[node] in " \t":
            node = nxt[node]
        if node == _END:
            return None
        if char[node] == "{":
            closing = self.mate[node]
            if closing == _END:
                return None
            inside = None if nxt[node] == closing else (nxt[node], self.prev[closing])
            return inside, nxt[closing], False
        if char[node] == "\\":
            name, last, after = self.after_letters(nxt[node])
            if name:
                return (node, last), after, False
        return (node, node), nxt[node], True

    def replace(self, first: int, stop: int, template: Template, args: list[Range]) -> int:
        """Replace the nodes from ``first`` up to ``stop`` (excluded) by ``template``, its
        argument indices standing for the ranges ``args`` (nodes of the replaced span, moved).
        Returns the node before the replacement."""
        char, nxt, prv, mate = self.char, self.next, self.prev, self.mate
        before = prv[first]
        last = before
        for piece in template:
            if isinstance(piece, str):
                for c in piece:
                    node = len(char)
                    char.append(c)
                    mate.append(_END)
                    nxt.append(_END)
                    prv.append(last)
                    nxt[last] = node
                    last = node
            elif (span := args[piece]) is not None:
                nxt[last], prv[span[0]] = span[0], last
                last = span[1]
        nxt[last] = stop
        if stop != _END:
            prv[stop] = last
        return before


def _replace_command(
    s: str, pattern: re.Pattern[str], names: frozenset[str], template: Template
) -> str | None:
    """Replace every ``\\cmd{a}{b}`` (any nesting, innermost arguments converted too) by
    ``template`` (text, and the indices of the arguments to insert); None if an argument is
    missing or there are too many commands. ``pattern`` finds the commands named ``names``."""
    if pattern.search(s) is None:
        return s
    chars = _Chars(s)
    arity = sum(isinstance(piece, int) for piece in template)
    resume = 0
    for _ in range(_MAX_COMMANDS):
        found = chars.find_command(resume, names)
        if found is None:
            return chars.text()
        first, node = found
        args: list[Range] = []
        for _ in range(arity):
            group = chars.read_group(node)
            if group is None:
                return None
            args.append(group[0])
            node = group[1]
        # nothing before ``first`` changes and no rendering starts with a backslash: the next
        # command starts after ``first``, or just before it (a ``\`` before ``sqrt(``)
        resume = chars.replace(first, node, template, args)
    return None


_ROOT_TEMPLATE: Template = ("((", 0, ")^(1/(", 1, ")))")
_SQRT_TEMPLATE: Template = ("sqrt(", 0, ")")


def _replace_sqrt(s: str) -> str | None:
    """``\\sqrt{x}`` -> ``sqrt(x)``, ``\\sqrt[3]{x}`` -> ``(x)^(1/(3))``; as
    :func:`_replace_command`, the index read up to the first ``]``.

    Two things can cost more than a command's own length, both only on malformed text: finding
    the ``]`` walks the index, and the index, moved after the body, is walked again by the next
    search when it holds an unclosed ``\\sqrt[``; an index with braces moved after a lone ``}``
    body makes the braces pair differently, so they are paired again. Together they have a
    budget of _INDEX_WORK steps per character (a real index is a few characters): past it the
    answer is not read, as past _MAX_COMMANDS commands."""
    if _SQRT_RE.search(s) is None:
        return s
    chars = _Chars(s)
    char, nxt, prv = chars.char, chars.next, chars.prev
    budget = _INDEX_WORK * len(s) + 256
    resume = 0
    for _ in range(_MAX_COMMANDS):
        found = chars.find_command(resume, _SQRT_NAMES)
        if found is None:
            return chars.text()
        first, node = found
        root: Range = None
        indexed = node != _END and char[node] == "["
        braces = False
        if indexed:
            close = nxt[node]
            while close != _END and char[close] != "]":
                braces = braces or char[close] in "{}"
                close = nxt[close]
                budget -= 1
            if close == _END or budget < 0:
                return None
            root = None if nxt[node] == close else (nxt[node], prv[close])
            node = nxt[close]
        group = chars.read_group(node)
        if group is None:
            return None
        body, node, single = group
        if not indexed:
            resume = chars.replace(first, node, _SQRT_TEMPLATE, [body])
            continue
        resume = chars.replace(first, node, _ROOT_TEMPLATE, [body, root])
        if braces and single and body is not None and char[body[0]] == "}":
            # braces of the index, now after a lone "}" (the only rewrite that reorders braces),
            # may pair differently, and so may every brace after them: pair them all again
            budget -= len(char)
            if budget < 0:
                return None
            chars._pair([n for n in chars.nodes() if char[n] in "{}"])
    return None


_ASSIGNMENT_RE = re.compile(r"^[A-Za-z](?:_\(?+\w++\)?+)?+\s*+=([^=]++)$")
_ARITHMETIC_RE = re.compile(r"[\d\s+\-*/^().]++")


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


# a decimal: digits, then optionally a point and digits; or a point and digits
_UNSIGNED = r"(?:\d++(?:\.\d*+)?+|\.\d++)"
_DECIMAL_RE = re.compile(rf"[+-]?+{_UNSIGNED}(?:[eE][+-]?+\d{{1,3}}+)?+")
_FRACTION_RE = re.compile(rf"([+-]?+{_UNSIGNED})\s*+/\s*+({_UNSIGNED})")


def parse_number(s: str) -> Fraction | None:
    """Exact value of a decimal (``-1.50``, ``.5``, ``2e3``) or a simple fraction (``3/4``);
    None past Python's limit on the digits of an int (4300; answers are capped far below)."""
    try:
        if _DECIMAL_RE.fullmatch(s):
            return Fraction(s)
        fraction = _FRACTION_RE.fullmatch(s)
        if fraction:
            denominator = Fraction(fraction.group(2))
            if denominator:
                return Fraction(fraction.group(1)) / denominator
    except ValueError:  # too many digits (what the patterns accept, Fraction reads)
        return None
    return None

"""The final answer of a model response, found by scanning its text. In priority order:

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

Extraction never evaluates anything: whether a span "reads as an answer" is a question of
grammar, which the caller answers (``reads_as_answer``; :func:`winnow.answers.final.extract_answer`
asks the answer grammar), so it runs in-process in microseconds whatever the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from winnow.answers.latex import BOXED_RE, UNICODE, read_group

MAX_ANSWER_CHARS = 1000  # longer "answers" (whole solutions) have no key: not even parsed
_MAX_TRIES = 8  # answer markers tried, from the last: bounds the work on pathological texts
_MAX_BARE_CHARS = 64  # a whole response this short may itself be the answer


# These patterns scan whole responses (no length cap), so each runs in time linear in the text by
# construction: quantifiers are possessive (``*+``, ``++``, ``?+``: never give characters back) or
# followed by a class they cannot match, and each alternative starts with a literal, ``^`` or a
# lookbehind that lets it start only at the boundary of a run (so ``finditer`` does not rescan
# the run from each of its characters). tests/unit/test_answer_linear.py counts the engine's steps.

# "... the answer is X" anywhere; "Answer: X" only at a line start or after "the"/"final", so that
# "let me answer: first, ..." is not read as an answer.
_ANSWER_RE = re.compile(
    r"(?:\banswer[*_ \t]*+is\b|(?:^[ \t*#_>-]*+|\bthe[ \t]++|\bfinal[ \t]++)(?:final[ \t]++)?+"
    r"answer[*_ \t]*+:)[*_:\s]*+",
    re.IGNORECASE | re.MULTILINE,
)
_GSM8K_RE = re.compile(r"####[ \t]*+([^\n]*+)")
_SENTENCE_END_RE = re.compile(r"(?<!\d)\.(?!\d)|\.(?=\s|$)|\n")
# A number: optional sign, thousands groups or plain digits, optional decimals, optional "/den".
# Not preceded by a word character or a dot, nor by a hyphen glued to a letter (COVID-19).
# A LaTeX fraction of integers (\frac{3}{4}, \dfrac34) counts as one number.
# Thousands groups: as many as there are, except a last one glued to more digits (1,234,5678 is
# 1,234): the groups followed by another group, then the last one if no digit follows it; the
# lookahead first makes sure there is at least one group.
_THOUSANDS = r"\d{1,3}+(?=,\d{3}(?!\d)|,\d{3},\d{3})(?:,\d{3}(?=,\d{3}))*+(?:,\d{3}(?!\d))?+"
_NUMBER_RE = re.compile(
    r"-?\\[dt]?frac(?:\{\s*+\d++\s*+\}\s*+\{\s*+\d++\s*+\}|\d\d)"
    r"|(?<![\w.])(?<![A-Za-z]-)"
    rf"[-+]?+(?:{_THOUSANDS}|\d++|(?=\.\d))(?:\.\d++)?+(?:/\d++(?![\d.]))?+"
)
_SPAN_LEAD = " \t\n*_$:"
_SPAN_TRAIL = " \t\n*_$.,;:!?"


Finder = Callable[[str, Callable[[str], bool]], str | None]
"""A rule: (text, the answer grammar) -> the answer it finds, or None."""


def final_answer(text: str, reads_as_answer: Callable[[str], bool]) -> str | None:
    """The final answer of a model response (see the module docstring), or None.
    ``reads_as_answer`` says whether a span is an answer by its grammar."""
    if not text:
        return None
    return _first((*_STATED, _bare_answer, _last_number), text.translate(UNICODE), reads_as_answer)


def stated_answer(text: str, reads_as_answer: Callable[[str], bool]) -> str | None:
    """The answer ``text`` states explicitly (rules 1 to 3, on the text as it is), or None: a
    bare last number does not count, it may be an intermediate result."""
    return _first(_STATED, text, reads_as_answer)


def _first(
    finders: tuple[Finder, ...], text: str, reads_as_answer: Callable[[str], bool]
) -> str | None:
    for finder in finders:
        answer = finder(text, reads_as_answer)
        if answer:
            return answer
    return None


def _last_boxed(text: str, reads_as_answer: Callable[[str], bool]) -> str | None:
    """The content of the last complete ``\\boxed{...}``; truncated ones are skipped."""
    for match in reversed(list(BOXED_RE.finditer(text))[-_MAX_TRIES:]):
        group = read_group(text, match.end(), match.end() + MAX_ANSWER_CHARS)
        if group is not None and group[0].strip():
            return _clean_span(group[0])
    return None


def _last_answer_clause(text: str, reads_as_answer: Callable[[str], bool]) -> str | None:
    for match in reversed(list(_ANSWER_RE.finditer(text))[-_MAX_TRIES:]):
        clause = text[match.end() : match.end() + MAX_ANSWER_CHARS]
        end = _SENTENCE_END_RE.search(clause)
        clause = _clean_span(clause[: end.start()] if end else clause)
        if not clause:
            continue
        if reads_as_answer(clause):
            return clause
        number = _NUMBER_RE.search(clause)
        if number:
            return number.group()
    return None


def _last_gsm8k_marker(text: str, reads_as_answer: Callable[[str], bool]) -> str | None:
    matches = _GSM8K_RE.findall(text)
    if not matches:
        return None
    line = _clean_span(matches[-1])
    if reads_as_answer(line):
        return line
    number = _NUMBER_RE.search(line)
    return number.group() if number else None


def _bare_answer(text: str, reads_as_answer: Callable[[str], bool]) -> str | None:
    """The whole response, when it is one short line that reads as an answer."""
    stripped = _clean_span(text)
    if len(stripped) > _MAX_BARE_CHARS or "\n" in stripped:
        return None
    return stripped if reads_as_answer(stripped) else None


def _last_number(text: str, reads_as_answer: Callable[[str], bool]) -> str | None:
    last = None
    for last in _NUMBER_RE.finditer(text):  # noqa: B007 - we want the last match
        pass
    return last.group() if last else None


_STATED: tuple[Finder, ...] = (_last_boxed, _last_answer_clause, _last_gsm8k_marker)


def _clean_span(span: str) -> str:
    """Strip markdown emphasis, ``$`` delimiters and trailing punctuation around an answer."""
    span = span.strip().lstrip(_SPAN_LEAD).rstrip(_SPAN_TRAIL)
    for opening, closing in (("\\(", "\\)"), ("\\[", "\\]")):
        if span.startswith(opening) and span.endswith(closing):
            span = span[len(opening) : -len(closing)]
    return span.strip().lstrip(_SPAN_LEAD).rstrip(_SPAN_TRAIL)

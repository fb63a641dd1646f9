"""Problem keys: which questions are the same problem, so that a train/eval split never puts two
spellings of one problem on both sides.

reasoning-gym writes one sum with and without brackets (``"Calculate ( -1 - -1 )."`` and
``"Calculate -1 - -1."``), and a split by a hash of the raw text sends them to different sides:
the held-out figures are then partly measured on training problems. Questions are therefore
split by a normalized key:

* the user's ``group`` when the question has one (``group:<group>``);
* for a question that states an arithmetic expression (every number in it belongs to one),
  the expression itself (``arith:<expression>``), whatever the words around it: brackets and
  double negation removed, so ``-1 - -1``, ``( -1 - -1 )`` and ``-1 + 1`` are one key. A
  sum or difference (``+``/``-`` and brackets only) is read as its multiset of signed terms,
  which is exact and order-free (``-( 5 + -8 )`` is ``-5 + 8``, and ``8 - 5`` the same
  problem); a product of numbers alone as its sorted factors (``7 * 12`` is ``12 * 7``);
  otherwise (``/``, ``^``, mixed operators) the brackets are dropped and sign pairs folded,
  which may merge two different problems into one key (harmless: merged problems only move
  together) but never splits one. A commuted sum is a near-duplicate a split must not
  straddle: on the 800 stored questions of the default model's training tasks, 127 of the
  247 held-out ones were a training sum or product written in another order under the
  ordered keys;
* otherwise the text, case-folded with whitespace collapsed and trailing punctuation dropped
  (``text:<text>``).

A key goes to evaluation when its hash falls under the evaluation fraction (:func:`split_of_key`),
so the split is stable as questions are added.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Split = Literal["train", "eval"]

_NUMBER = r"\d+(?:\.\d+)?"
_RUN = re.compile(r"[\d\s.+\-*/^()]+")  # a stretch of arithmetic characters
_TOKEN = re.compile(rf"{_NUMBER}|[+\-*/^()]")
_PRODUCT = re.compile(rf"-?{_NUMBER}(?:\*-?{_NUMBER})+")  # numbers and * only, after folding
_OPS = {"\u00d7": "*", "\u00f7": "/", "\u2212": "-", "\u2013": "-"}  # times, divide, minus, dash


def problem_key(question: str, group: str | None = None) -> str:
    """The question's problem key (see the module's docstring)."""
    if group is not None and group.strip():
        return f"group:{group.strip()}"
    text = unicodedata.normalize("NFKC", question)
    for old, new in _OPS.items():
        text = text.replace(old, new)
    runs = [(run, _expression(run)) for run in _RUN.findall(text)]
    expressions = [e for _, e in runs if e]
    in_expressions = sum(len(re.findall(_NUMBER, run)) for run, e in runs if e)
    # arithmetic only when every number of the question is in an expression: a word problem
    # that mentions a date or a range is keyed by its text
    if expressions and in_expressions == len(re.findall(_NUMBER, text)):
        return "arith:" + "|".join(expressions)
    return "text:" + normalized_text(text)


def normalized_text(text: str) -> str:
    """Case-folded, whitespace collapsed, trailing punctuation dropped."""
    folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return folded.rstrip(" .?!:;")


def _expression(run: str) -> str | None:
    """The canonical form of an arithmetic stretch; None unless it has two numbers and an
    operator between them (a lone number, a date or a list is not an expression)."""
    tokens = _TOKEN.findall(run.strip().rstrip("."))
    numbers = sum(1 for t in tokens if t[0].isdigit())
    if numbers < 2:
        return None
    terms = _signed_terms(tokens)
    if terms is not None:
        signed = sorted(f"{'-' if negative else '+'}{n}" for negative, n in terms)
        return "".join(signed).lstrip("+")
    flat = "".join(_number(t) if t[0].isdigit() else t for t in tokens if t not in "()")
    previous = None
    while previous != flat:
        previous = flat
        for pair, sign in (("--", "+"), ("+-", "-"), ("-+", "-"), ("++", "+")):
            flat = flat.replace(pair, sign)
    flat = re.sub(r"([*/^])\+", r"\1", flat)
    if _PRODUCT.fullmatch(flat):
        return "*".join(sorted(flat.split("*")))
    return flat.lstrip("+") if any(op in flat.lstrip("+-") for op in "+-*/^") else None


def _number(token: str) -> str:
    whole, _, frac = token.partition(".")
    frac = frac.rstrip("0")
    return (whole.lstrip("0") or "0") + (f".{frac}" if frac else "")


def _signed_terms(tokens: Sequence[str]) -> list[tuple[bool, str]] | None:
    """A sum of signed terms (``-( 5 + -8 )`` -> [(-, 5), (+, 8)]); None if the tokens are not
    a well-formed expression of numbers, ``+``, ``-`` and brackets."""
    if any(t in "*/^" for t in tokens if not t[0].isdigit()):
        return None
    out: list[tuple[bool, str]] = []
    at = 0

    def operand(negative: bool) -> bool:
        nonlocal at
        while at < len(tokens) and tokens[at] in "+-":
            negative ^= tokens[at] == "-"
            at += 1
        if at >= len(tokens):
            return False
        token = tokens[at]
        at += 1
        if token == "(":
            if not expression(negative) or at >= len(tokens) or tokens[at] != ")":
                return False
            at += 1
            return True
        if not token[0].isdigit():
            return False
        out.append((negative, _number(token)))
        return True

    def expression(negative: bool) -> bool:
        nonlocal at
        if not operand(negative):
            return False
        while at < len(tokens) and tokens[at] in "+-":
            sign = tokens[at] == "-"
            at += 1
            if not operand(negative ^ sign):
                return False
        return True

    if not expression(False) or at != len(tokens):
        return None
    return [(negative and n != "0", n) for negative, n in out]


def split_of_key(key: str, eval_fraction: float = 0.3, salt: str = "") -> Split:
    """The side of the split a problem key is on: a hash of the key (and ``salt``), so one key is
    always on one side and adding questions moves no old one."""
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else "train"


class LeakReport(BaseModel):
    """How many evaluation questions are a training problem under another spelling."""

    model_config = ConfigDict(extra="forbid")

    eval_questions: int
    train_questions: int
    shared: int = Field(description="Evaluation questions whose key a training question has.")
    shared_keys: int = Field(description="Distinct keys on both sides.")
    examples: list[tuple[str, str]] = Field(
        default_factory=list, description="Up to 10 (evaluation question, training question)."
    )

    @property
    def fraction(self) -> float:
        return self.shared / self.eval_questions if self.eval_questions else 0.0


def leak_report(
    eval_questions: Iterable[str | tuple[str, str | None]],
    train_questions: Iterable[str | tuple[str, str | None]],
) -> LeakReport:
    """For an evaluation set and a training set (questions, or (question, group) pairs), the
    evaluation questions that share a problem key with a training one."""
    evals, trains = [_keyed(q) for q in eval_questions], [_keyed(q) for q in train_questions]
    seen: dict[str, str] = {}
    for question, key in trains:
        seen.setdefault(key, question)
    shared = [(q, seen[key]) for q, key in evals if key in seen]
    return LeakReport(
        eval_questions=len(evals),
        train_questions=len(trains),
        shared=len(shared),
        shared_keys=len({key for _, key in evals if key in seen}),
        examples=shared[:10],
    )


def _keyed(item: str | tuple[str, str | None]) -> tuple[str, str]:
    question, group = (item, None) if isinstance(item, str) else item
    return question, problem_key(question, group)

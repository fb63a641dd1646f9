"""What labels a sampled answer: the rule-based verifier, or the user's own checker.

A checker is a function ``(response, answer) -> bool`` (or a number in [0, 1], read as right when
above one half), named on the command line as ``module:function`` (``--checker
mychecks:is_right``; the module is imported from the current directory or the Python path).
Labels are never stored: they are recomputed when the journal is read, so a fixed checker
relabels old samples.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

from winnow.answers.final import AnswerError, gold_answer, matches_reference

Checker = Callable[[str, str], object]


def verifier(response: str, answer: str) -> bool:
    """The server's verifier reward: the response's final answer equals the reference's
    (a bare answer or a solution ending ``#### 42``)."""
    return matches_reference(response, gold_answer(answer))


def check_answers(answers: list[str]) -> None:
    """``ValueError`` naming the first answer the verifier cannot read (before any sampling)."""
    for answer in answers:
        try:
            gold_answer(answer)
        except AnswerError as exc:
            raise ValueError(f"the verifier cannot use the answer {answer!r}: {exc}") from None


def load_checker(spec: str | None) -> Checker:
    """The checker named ``module:function``; the verifier when ``spec`` is None."""
    if spec is None:
        return verifier
    module_name, _, function = spec.partition(":")
    if not module_name or not function:
        raise ValueError(f"--checker must be module:function, not {spec!r}")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        found = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--checker {spec}: {exc}") from None
    if not callable(found):
        raise ValueError(f"--checker {spec} is not a function")
    return found  # type: ignore[no-any-return]


def label(checker: Checker, response: str, answer: str) -> int:
    """1 if ``checker`` accepts the response, else 0."""
    verdict = checker(response, answer)
    return int(float(verdict) > 0.5) if not isinstance(verdict, bool) else int(verdict)  # type: ignore[arg-type]

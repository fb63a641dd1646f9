"""The rule-based verifier: 1.0 when a response's final answer matches the item's reference.

Answers are read and compared by :mod:`winnow.answers.final`, the same code the voting strategies
use,
so "correct" and "same answer" never disagree. A response whose answer only repeats a
calculation (``1 + 4``) is not correct: a final answer is a value. A reference past the answer
bounds (``((10^{1000})^{1000})^{1000}``) is an input error that says why (a 400), found before
anything is evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence

from winnow.answers.final import (
    AnswerError,
    gold_answer,
    matches_reference,
    off_loop,
    start_workers,
)
from winnow.rewards.base import OutcomeItem, Reward, RewardInfo, RewardInputError, Scored

# Up to this many items, scoring is tried inline on the event loop (plain numbers: microseconds,
# a thread hop would cost more); it moves to a thread as soon as an answer needs sympy (a worker
# process, see winnow.answers.final) and at once for larger batches.
THREAD_THRESHOLD = 32


class VerifierReward(Reward):
    """Outcome reward from a gold answer per item (``OutcomeItem.reference``).

    The reference may be a bare answer (``"42"``, ``"\\frac{1}{2}"``, ``"x = 3"``) or a full
    solution (GSM8K-style text ending in ``#### 42``), from which the answer is extracted.
    """

    def __init__(self, name: str = "verifier") -> None:
        self._info = RewardInfo(
            name=name,
            kind="outcome",
            backend="verifier",
            scale="1.0 if the final answer matches the reference, else 0.0",
            description="rule-based: extracts the final answer (\\boxed{}, 'the answer is', "
            "#### n, last number) and compares it with the reference numerically or "
            "symbolically",
        )

    @property
    def info(self) -> RewardInfo:
        return self._info

    async def start(self) -> None:
        """Start the answer workers now (sympy's import takes a second or two), not inside the
        first request; a server whose workers cannot start still serves plain numbers."""
        await off_loop(start_workers, 120.0, inline=False)

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        for index, item in enumerate(items):
            if item.reference is None or not item.reference.strip():
                raise RewardInputError(
                    f"the verifier needs a reference answer per item (item {index} has none)"
                )
        scores = await off_loop(_score_all, list(items), inline=len(items) <= THREAD_THRESHOLD)
        return Scored(scores, tokens=0)


def _reference_answer(item: OutcomeItem, index: int) -> str:
    """The gold answer of an item: the reference itself if it reads as an answer, else the
    answer extracted from it (a worked solution)."""
    try:
        return gold_answer(item.reference or "")
    except AnswerError as exc:
        raise RewardInputError(
            f"the verifier can't use the reference of item {index}: {exc}"
        ) from None


def _score_all(items: Sequence[OutcomeItem]) -> list[float]:
    references = [_reference_answer(item, index) for index, item in enumerate(items)]
    return [_score_one(item.response, ref) for item, ref in zip(items, references, strict=True)]


def _score_one(response: str, reference: str) -> float:
    return 1.0 if matches_reference(response, reference) else 0.0

"""The rule-based verifier: 1.0 when a response's final answer matches the item's reference.

Answers are read and compared by :mod:`winnow.answers`, the same code the voting strategies use,
so "correct" and "same answer" never disagree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from winnow.answers import canonical, equivalent, extract_answer
from winnow.rewards.base import OutcomeItem, Reward, RewardInfo, RewardInputError, Scored

# Above this many items, scoring runs in a worker thread: a cold sympy parse costs milliseconds,
# and a batch of 64 cold symbolic answers would otherwise stall every request on the event loop.
# Small batches stay inline, where a thread hop would cost more than the work.
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
        """Import and warm sympy now (about a second), not inside the first request."""
        await asyncio.to_thread(canonical, "\\frac{x^2-1}{x-1}")

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        for index, item in enumerate(items):
            if item.reference is None or not item.reference.strip():
                raise RewardInputError(
                    f"the verifier needs a reference answer per item (item {index} has none)"
                )
        if len(items) > THREAD_THRESHOLD:
            scores = await asyncio.to_thread(_score_all, items)
        else:
            scores = _score_all(items)
        return Scored(scores, tokens=0)


def _reference_answer(item: OutcomeItem, index: int) -> str:
    """The gold answer of an item: the reference itself if it reads as an answer, else the
    answer extracted from it (a worked solution)."""
    reference = item.reference or ""
    if canonical(reference) is not None:
        return reference
    extracted = extract_answer(reference)
    if extracted is None or canonical(extracted) is None:
        raise RewardInputError(
            f"the verifier can't read an answer in the reference of item {index}: "
            f"{reference[:80]!r} (it understands numbers, fractions and simple expressions)"
        )
    return extracted


def _score_all(items: Sequence[OutcomeItem]) -> list[float]:
    references = [_reference_answer(item, index) for index, item in enumerate(items)]
    return [_score_one(item.response, ref) for item, ref in zip(items, references, strict=True)]


def _score_one(response: str, reference: str) -> float:
    answer = extract_answer(response)
    return 1.0 if answer is not None and equivalent(answer, reference) else 0.0

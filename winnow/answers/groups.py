"""Which responses give the same final answer: the answer groups the voting strategies count
(majority vote, best-of-majority, weighted votes, adaptive stopping, tree search's final vote).

One extraction per response (:func:`winnow.answers.final.extract_answer`); responses whose answers
are
:func:`~winnow.answers.final.equivalent` share a group, found without comparing every pair (see
:func:`answers_and_groups`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from winnow.answers.final import AnswerValue, answer_value, extract_answer, numbers_close, off_loop

__all__ = ["answers_and_groups", "answers_and_groups_async", "group_answers"]

_INLINE_MAX = 32  # off_loop: at most this many texts are tried inline on the event loop


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
        value = answer_value(answer) if answer else None
        values.append(value if value is not None and value.reduced else None)
    parent: dict[str, str] = {}
    numeric: dict[str, AnswerValue] = {}
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
        if numbers_close(a, b):
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

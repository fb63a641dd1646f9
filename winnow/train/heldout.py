"""Held-out figures a skeptic accepts: intervals, and selection averaged over draws.

* Within-question AUC (:func:`within_auc_interval`): the mean over questions with right and wrong
  answers of the reward's AUC among that question's answers, with a percentile bootstrap interval
  that resamples QUESTIONS (answers to one question are not independent).
* Selection at N (:func:`selection_at`): for every question, many random N-subsets of its
  answers; in each, best-of-N (the best-scored answer), majority vote (the largest answer group),
  weighted vote (the group whose scores sum highest) and pass@N; a tie counts as the mean over the
  tied choices (what a random tie-break gets on average). Per question the mean over subsets; the
  figure the mean over questions, and each gain over majority comes with a PAIRED bootstrap over
  questions (the same resampled questions for both methods).

A single draw (the first N answers) is one sample of these averages; reporting it as the figure
overstates how sure it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from winnow.train.ranking import auc


class Interval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: float
    low: float
    high: float
    questions: int

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


class SelectionFigures(BaseModel):
    """Accuracies at N (mean over questions of the mean over subsets) and gains over majority."""

    model_config = ConfigDict(extra="forbid")

    n: int
    questions: int
    subsets: int
    best_of_n: float
    majority: float
    weighted_vote: float
    pass_at_n: float
    best_of_n_gain: Interval
    weighted_vote_gain: Interval


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def bootstrap_mean(
    per_question: Sequence[float], draws: int = 2000, seed: int = 0, level: float = 0.95
) -> Interval:
    """The mean of per-question values with a percentile bootstrap interval over questions."""
    values = np.asarray(per_question, dtype=float)
    if len(values) == 0:
        return Interval(value=float("nan"), low=float("nan"), high=float("nan"), questions=0)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(draws, len(values)))].mean(1)
    low, high = _percentiles(means, level)
    return Interval(value=float(values.mean()), low=low, high=high, questions=len(values))


def per_question_auc(
    scores: Sequence[Sequence[float]], labels: Sequence[Sequence[int]]
) -> list[float]:
    """Each question's within-question AUC (questions with only right or only wrong answers
    left out)."""
    out = []
    for s, y in zip(scores, labels, strict=True):
        value = auc(list(s), list(y))
        if value is not None:
            out.append(value)
    return out


def within_auc_interval(
    scores: Sequence[Sequence[float]], labels: Sequence[Sequence[int]], **bootstrap: float
) -> Interval:
    return bootstrap_mean(per_question_auc(scores, labels), **bootstrap)  # type: ignore[arg-type]


def _tie_mean(values: np.ndarray, keys: np.ndarray) -> float:
    """The mean of ``values`` where ``keys`` is at its maximum."""
    return float(values[keys == keys.max()].mean())


def _vote(labels: np.ndarray, groups: np.ndarray, weights: np.ndarray) -> float:
    """Expected correctness of the group with the largest total weight (groups < 0 do not
    vote); 0 when no answer has a group."""
    voting = groups >= 0
    if not voting.any():
        return 0.0
    ids = np.unique(groups[voting])
    totals = np.array([weights[groups == g].sum() for g in ids])
    right = np.array([labels[groups == g].mean() for g in ids])
    return _tie_mean(right, totals)


def question_selection(
    scores: Sequence[float],
    labels: Sequence[int],
    groups: Sequence[int | None],
    n: int,
    subsets: int,
    rng: np.random.Generator,
) -> tuple[float, float, float, float]:
    """(best-of-N, majority, weighted vote, pass@N) of one question, averaged over ``subsets``
    random N-subsets of its answers (all of them once when it has no more than N)."""
    s = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
    y = np.asarray(labels, dtype=float)
    g = np.asarray([-1 if x is None else x for x in groups])
    p = np.where(np.isfinite(s), s, 0.0)
    if len(s) <= n:
        draws = [np.arange(len(s))]
    else:
        draws = [rng.choice(len(s), size=n, replace=False) for _ in range(subsets)]
    totals = np.zeros(4)
    for pick in draws:
        totals += (
            _tie_mean(y[pick], s[pick]),
            _vote(y[pick], g[pick], np.ones(len(pick))),
            _vote(y[pick], g[pick], p[pick]),
            float(y[pick].max()),
        )
    best, majority, weighted, passed = totals / len(draws)
    return float(best), float(majority), float(weighted), float(passed)


def selection_at(
    scores: Sequence[Sequence[float]],
    labels: Sequence[Sequence[int]],
    groups: Sequence[Sequence[int | None]],
    n: int,
    *,
    subsets: int = 300,
    draws: int = 2000,
    seed: int = 0,
) -> SelectionFigures:
    """Selection figures at ``n`` over every question (scores read as probabilities by the
    weighted vote: give a sigmoid reward's output)."""
    rng = np.random.default_rng(seed)
    rows = np.array(
        [
            question_selection(s, y, g, n, subsets, rng)
            for s, y, g in zip(scores, labels, groups, strict=True)
        ]
    ).reshape(-1, 4)
    best, majority, weighted, passed = rows.mean(0) if len(rows) else [float("nan")] * 4
    return SelectionFigures(
        n=n,
        questions=len(rows),
        subsets=subsets,
        best_of_n=float(best),
        majority=float(majority),
        weighted_vote=float(weighted),
        pass_at_n=float(passed),
        best_of_n_gain=bootstrap_mean(rows[:, 0] - rows[:, 1], draws, seed),
        weighted_vote_gain=bootstrap_mean(rows[:, 2] - rows[:, 1], draws, seed),
    )

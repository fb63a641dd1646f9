"""DeepConf (Fu et al., "Deep Think with Confidence"), as pure functions: trace confidence from the
token confidences the engine recorded, the offline filter and confidence-weighted vote, the
online mode's warm-up threshold and its consensus stop.

Nothing here knows about engines or HTTP. A candidate's token confidences are ``values[k]``, the
confidence of its position ``k`` (None where unknown; :mod:`winnow.engine.confidence` reads
them back from the engine); answers are grouped by the project's answer keys (the group ids of
:func:`winnow.answers.groups.answers_and_groups`, None for no parseable answer).

Trace statistics (:func:`trace_confidence`), all higher for a more confident trace:

* ``lowest_group`` — the lowest group confidence: the minimum over sliding windows of ``window``
  tokens of their mean confidence (a trace shorter than the window is one group). The online
  mode's statistic: the engine ends a row as soon as a window's mean falls below the threshold.
* ``bottom_10`` — the mean of the lowest 10% of the group confidences (at least one group).
* ``tail`` — the mean confidence of the last ``tail`` tokens.
* ``mean`` — the mean confidence of the whole trace (the paper's baseline).

Offline (:func:`filter_and_vote`): of the candidates with an answer and a statistic, keep those
at or above the ``100 * (1 - eta)``th percentile of the statistic (the top ``eta``; ties at the
bar are kept), then each kept answer votes with its statistic. Online: the warm-up traces' lowest
group confidences give the threshold (:func:`warmup_threshold`, the same percentile: eta 0.1 is
DeepConf-low's 90th percentile, 0.9 DeepConf-high's 10th), and sampling stops once the leading
answer holds at least ``tau`` of the weighted votes (:func:`consensus_reached`).

Means of token confidences are exact (:func:`winnow.engine.confidence.exact_mean`), so the group
confidences here are bit for bit the ones the engine compared with the threshold. Ties between
answers break towards the one seen first, as everywhere in the project.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from winnow.engine.confidence import exact_mean, group_confidences
from winnow.engine.processors.specs import (
    CONFIDENCE_MAX_TOP_K,
    CONFIDENCE_MAX_WINDOW,
    ConfidenceSpec,
)

__all__ = [
    "BOTTOM_SHARE",
    "ConfidenceParams",
    "ConfidenceVote",
    "Statistic",
    "TraceConfidence",
    "consensus_reached",
    "filter_and_vote",
    "keep_top",
    "percentile_bar",
    "trace_confidence",
    "warmup_threshold",
    "weighted_vote",
]

Statistic = Literal["lowest_group", "bottom_10", "tail", "mean"]
BOTTOM_SHARE = 0.1
"""``bottom_10`` averages the lowest ``max(1, floor(BOTTOM_SHARE * groups))`` group confidences."""


@dataclass(frozen=True, slots=True)
class TraceConfidence:
    """One candidate's confidence statistics (None: no token confidence known)."""

    lowest_group: float | None
    bottom_10: float | None
    tail: float | None
    mean: float | None
    tokens: int  # the finite token confidences they come from
    window: int = 1  # the group size they were computed with

    def get(self, statistic: Statistic) -> float | None:
        value: float | None = getattr(self, statistic)
        return value


def trace_confidence(values: Sequence[float | None], window: int, tail: int) -> TraceConfidence:
    """The statistics of one trace's token confidences (None and non-finite values skipped)."""
    if window < 1 or tail < 1:
        raise ValueError("window and tail must be positive")
    finite = [v for v in values if v is not None and math.isfinite(v)]
    groups = group_confidences(finite, window)
    if not groups:
        return TraceConfidence(None, None, None, None, 0, window)
    lowest = sorted(groups)[: max(1, int(len(groups) * BOTTOM_SHARE))]
    return TraceConfidence(
        lowest_group=lowest[0],
        bottom_10=math.fsum(lowest) / len(lowest),
        tail=exact_mean(finite[-tail:]),
        mean=exact_mean(finite),
        tokens=len(finite),
        window=window,
    )


class ConfidenceParams(BaseModel):
    """How a request reads the policy's token confidence (``strategy.token_confidence``). The
    defaults are the ones chosen on 60 training-split questions of the default model
    (``benchmarks/deepconf/offline.py``: window 4 of 4-32, ``bottom_10``, eta 0.1 of 0.1-0.9);
    long reasoning traces want DeepConf's own long windows."""

    model_config = ConfigDict(extra="forbid")

    window: int = Field(
        4,
        ge=1,
        le=CONFIDENCE_MAX_WINDOW,
        description="Tokens per group (sliding window) of the group confidence; DeepConf's 2048 "
        "is for long reasoning traces, short answers need a short window.",
    )
    top_k: int = Field(
        20,
        ge=1,
        le=CONFIDENCE_MAX_TOP_K,
        description="Token confidence: minus the mean log-probability of the top-k tokens.",
    )
    statistic: Statistic = Field(
        "bottom_10",
        description="A trace's confidence: lowest_group (the online mode's), bottom_10 (mean of "
        "the lowest 10% of groups), tail (mean of the last `tail` tokens) or mean.",
    )
    eta: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="Vote with the top eta of the traces by confidence (0.1: DeepConf-low, "
        "0.9: DeepConf-high); online, a later trace is ended when it falls below the "
        "warm-up traces' top-eta bar.",
    )
    tail: int = Field(32, ge=1, description="Tokens of the `tail` statistic.")
    threshold: float | None = Field(
        None,
        gt=0.0,
        allow_inf_nan=False,
        description="End a trace inside the engine as soon as its group confidence falls below "
        "this; null: best_of_n and best_of_majority only record, adaptive's rule 'confidence' "
        "sets it from its first wave (DeepConf's warm-up).",
    )
    min_tokens: int = Field(0, ge=0, description="Tokens a trace writes before it may be ended.")

    def spec(self, threshold: float | None = None) -> ConfidenceSpec:
        """The engine call's confidence: recorded, and ended below ``threshold`` (else this
        setting's own threshold, if any)."""
        return ConfidenceSpec(
            window=self.window,
            top_k=self.top_k,
            threshold=self.threshold if threshold is None else threshold,
            min_tokens=self.min_tokens,
            tail=self.tail,
        )

    def of(self, values: Sequence[float | None]) -> TraceConfidence:
        """The statistics of one trace's token confidences."""
        return trace_confidence(values, self.window, self.tail)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def percentile_bar(values: Sequence[float | None], eta: float) -> float | None:
    """The ``100 * (1 - eta)``th percentile (linear interpolation, numpy's default) of the finite
    values: at or above it are the top ``eta`` of them. None without a finite value."""
    _check_fraction("eta", eta)
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    q = min(max(100.0 - 100.0 * eta, 0.0), 100.0)
    return float(np.percentile(np.asarray(finite, dtype=np.float64), q))


def warmup_threshold(lowest_groups: Sequence[float | None], eta: float) -> float | None:
    """The online mode's threshold from the warm-up traces' lowest group confidences: a later
    trace continues only while it stays with the top ``eta`` of them (eta 0.1: DeepConf-low,
    the 90th percentile; eta 0.9: DeepConf-high, the 10th). None without a warm-up value."""
    return percentile_bar(lowest_groups, eta)


def keep_top(statistics: Sequence[float | None], eta: float) -> list[int]:
    """Indices of the values at or above :func:`percentile_bar` (unknown values never kept)."""
    bar = percentile_bar(statistics, eta)
    if bar is None:
        return []
    return [i for i, v in enumerate(statistics) if v is not None and math.isfinite(v) and v >= bar]


@dataclass(frozen=True, slots=True)
class ConfidenceVote:
    """A confidence-weighted vote: the winning answer group, each group's total weight (in
    first-seen order), the candidates that voted, and the winner's share of the weights."""

    leader: int | None
    weights: dict[int, float] = field(default_factory=dict)
    voters: list[int] = field(default_factory=list)
    share: float = 0.0
    given: list[float] = field(default_factory=list)  # each voter's weight, as voters

    def weight_of(self, candidate: int) -> float | None:
        """The weight candidate ``candidate`` voted with (None: it did not vote)."""
        try:
            return self.given[self.voters.index(candidate)]
        except ValueError:
            return None


def weighted_vote(
    groups: Sequence[int | None],
    weights: Sequence[float | None],
    among: Sequence[int] | None = None,
) -> ConfidenceVote:
    """Each candidate with an answer group (and in ``among``, if given) votes for it with its
    weight (unknown or negative: 0). When no voter has a positive weight, each counts once."""
    if len(groups) != len(weights):
        raise ValueError("one weight per candidate")
    pool = range(len(groups)) if among is None else among
    voters = [i for i in pool if groups[i] is not None]
    if not voters:
        return ConfidenceVote(None)
    given = [max(w, 0.0) if (w := weights[i]) is not None and _usable(w) else 0.0 for i in voters]
    if not any(w > 0.0 for w in given):
        given = [1.0] * len(voters)
    totals: dict[int, float] = {}
    for i, w in zip(voters, given, strict=True):
        group = groups[i]
        assert group is not None
        totals[group] = totals.get(group, 0.0) + w
    leader = max(totals, key=lambda g: totals[g])  # the first-seen of tied leaders
    share = totals[leader] / math.fsum(totals.values())
    return ConfidenceVote(leader, totals, voters, share, given)


def filter_and_vote(
    groups: Sequence[int | None], statistics: Sequence[float | None], eta: float
) -> ConfidenceVote:
    """DeepConf offline: of the candidates with an answer and a known statistic, keep the top
    ``eta`` by it (:func:`percentile_bar`; ties at the bar kept), and vote with it."""
    if len(groups) != len(statistics):
        raise ValueError("one statistic per candidate")
    pool = [i for i, (g, s) in enumerate(zip(groups, statistics, strict=True)) if g is not None]
    pool = [i for i in pool if _usable(statistics[i])]
    bar = percentile_bar([statistics[i] for i in pool], eta)
    if bar is None:
        return ConfidenceVote(None)
    kept = [i for i in pool if (s := statistics[i]) is not None and s >= bar]
    return weighted_vote(groups, statistics, kept)


def consensus_reached(
    groups: Sequence[int | None], weights: Sequence[float | None], tau: float
) -> bool:
    """DeepConf online's stop: the leading answer holds at least ``tau`` of the weighted votes
    (candidates without an answer do not vote)."""
    _check_fraction("tau", tau)
    vote = weighted_vote(groups, weights)
    return vote.leader is not None and vote.share >= tau

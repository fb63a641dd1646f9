"""How a reward's scores read as probabilities, and how a process reward's step scores become
one (see :mod:`winnow.strategies.parts.selection` for why votes and means need probabilities).

Scores that are added up (a vote), averaged (best-of-majority) or multiplied (``prod``) are read
as probabilities first (:func:`probability_reading`): a reward whose scale is a probability as it
is, any other (a logit, a raw head, a weighted sum with a logit in it) through a sigmoid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

from winnow.rewards.base import RewardInfo
from winnow.strategies.base import Rewards

Aggregation = Literal["last", "min", "prod"]
Reading = Callable[[float], float]
"""A reward's score -> the probability it stands for (see :func:`probability_reading`)."""


def as_is(score: float) -> float:
    """The reading of a reward that already scores in [0, 1]."""
    return score


def sigmoid(x: float) -> float:
    """1 / (1 + e^-x), without overflow at either end."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _in_unit_interval(info: RewardInfo) -> bool:
    """The reward declares scores in [0, 1]: a probability, or the verifier's 0 / 1."""
    return info.scale.startswith("probability") or info.backend == "verifier"


def probability_reading(rewards: Rewards, reward: str | dict[str, float]) -> Reading:
    """How ``reward``'s scores read as probabilities, from the scale each reward declares.

    * probability rewards (``scale`` "probability in [0, 1]...": probes with a sigmoid, PRMs, the
      judge) and the verifier (0 / 1): as they are;
    * a weighted sum of such rewards with non-negative weights: the sum over the sum of weights
      (a mixture of probabilities, in [0, 1]);
    * anything else (a ``seq_cls`` logit, a raw probe head, a sum with a logit in it or a
      negative weight) is read as a logit: sigmoid(score).
    """
    info = rewards.info(reward)
    if _in_unit_interval(info):
        return as_is
    weights = info.extra.get("weights") if info.backend == "composite" else None
    if isinstance(weights, dict) and weights:
        total = float(sum(weights.values()))
        if (
            total > 0
            and all(w >= 0 for w in weights.values())
            and all(_in_unit_interval(rewards.info(name)) for name in weights)
        ):
            return lambda score: score / total
    return sigmoid


def probability(score: float | None, reading: Reading) -> float:
    """A score as a vote in [0, 1]; an unscored one (None, NaN) is 0, the worst."""
    if score is None or math.isnan(score):
        return 0.0
    p = reading(score)
    return 0.0 if math.isnan(p) else min(max(p, 0.0), 1.0)


def aggregate(step_scores: Sequence[float], how: Aggregation, reading: Reading = as_is) -> float:
    """Step scores -> one. ``prod`` multiplies the steps' probabilities (``reading``), so its
    result is a probability whatever the reward's scale; ``last`` and ``min`` keep the scale.
    NaN (unscored) when there is no step, or a step it reads is unscored: the worst score."""
    if not step_scores:
        return float("nan")
    used = step_scores[-1:] if how == "last" else step_scores
    if any(math.isnan(s) for s in used):
        return float("nan")
    if how == "min":
        return min(step_scores)
    if how == "prod":
        return math.prod(probability(s, reading) for s in step_scores)
    return step_scores[-1]


def aggregated_reading(reading: Reading, how: Aggregation) -> Reading:
    """The reading of scores :func:`aggregate` made: ``prod`` already gives probabilities."""
    return as_is if how == "prod" else reading

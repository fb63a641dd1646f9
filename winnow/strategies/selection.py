"""What best-of-N and best-of-majority share: sample N, score, group by final answer.

Selection rules (search-and-learn's and the Best-of-Majority paper's):

* ``best`` — highest score.
* ``weighted_vote`` — group equal final answers, sum the scores per group, best group wins.
* ``majority`` — group equal final answers, count per group (no reward calls at all).
* best-of-majority — groups with frequency >= alpha, ranked by MEAN score.

Ties break towards the earlier candidate (lower index), so results are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from winnow.answers import answers_and_groups
from winnow.engine.base import Completion
from winnow.rewards.base import OutcomeItem, ProcessItem, split_steps
from winnow.strategies.base import (
    Choice,
    GenerationRequest,
    MeteredEngine,
    Rewards,
    StrategyParams,
)
from winnow.strategies.registry import StrategyError

Aggregation = Literal["last", "min", "prod"]
RewardField = Field(
    "default",
    description='A configured reward name, or weights over rewards ({"default": 1, "x": 0.5}).',
)


class SelectionParams(StrategyParams):
    n: int = Field(4, ge=1, le=1024, description="Candidates to sample (N).")
    reward: str | dict[str, float] = RewardField
    aggregation: Aggregation = Field("last", description="How a PRM's step scores become one.")
    reference: str | None = Field(None, description="Gold answer, for the verifier reward.")
    return_candidates: bool = Field(False, description="Add every candidate to the response.")

    def candidates(self) -> int:
        return self.n

    def check(self, request: GenerationRequest) -> None:
        if request.n > self.n:
            raise StrategyError(
                f"n={request.n} choices asked from strategy.n={self.n} candidates", "n"
            )
        if self.n > 1 and request.temperature == 0:
            raise StrategyError("sampling N > 1 candidates needs temperature > 0", "temperature")


@dataclass(slots=True)
class Candidate:
    completion: Completion
    score: float | None = None
    answer: str | None = None
    group: int | None = None

    def as_dict(self, chosen: bool) -> dict[str, object]:
        c = self.completion
        return {
            "index": c.index,
            "text": c.text,
            "score": self.score,
            "answer": self.answer,
            "group": self.group,
            "finish_reason": c.finish_reason,
            "tokens": len(c.token_ids),
            "chosen": chosen,
            "note": None if self.answer is not None else "no parseable final answer: no group",
        }


def aggregate(step_scores: Sequence[float], how: Aggregation) -> float:
    if not step_scores:
        return float("nan")
    if how == "min":
        return min(step_scores)
    if how == "prod":
        return math.prod(step_scores)
    return step_scores[-1]


async def sample_candidates(
    request: GenerationRequest, engine: MeteredEngine, n: int
) -> tuple[str, list[Candidate]]:
    """N samples in ONE engine call (the prompt is prefilled once); returns the prompt text."""
    generation = await engine.generate(request.sampling(n=n))
    candidates = [Candidate(c) for c in generation.completions]
    answers, groups = answers_and_groups([c.completion.text for c in candidates])
    for candidate, answer, group in zip(candidates, answers, groups, strict=True):
        candidate.answer, candidate.group = answer, group
    return request.prompt_text, candidates


async def score_candidates(
    prompt: str,
    candidates: list[Candidate],
    rewards: Rewards,
    params: SelectionParams,
) -> None:
    """Score every candidate with the request's reward (one batched call)."""
    if rewards.info(params.reward).kind == "process":
        items = [
            ProcessItem(prompt, split_steps(c.completion.text), reference=params.reference)
            for c in candidates
        ]
        scored = await rewards.score_steps(params.reward, items)
        scores = [aggregate(s, params.aggregation) for s in scored.scores]
    else:
        outcome = [OutcomeItem(prompt, c.completion.text, params.reference) for c in candidates]
        scores = (await rewards.score(params.reward, outcome)).scores
    for candidate, score in zip(candidates, scores, strict=True):
        candidate.score = None if math.isnan(score) else float(score)


def _key(score: float | None) -> float:
    return -math.inf if score is None else score


def rank_best(candidates: Sequence[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (-_key(c.score), c.completion.index))


@dataclass(slots=True)
class Group:
    id: int
    members: list[Candidate]

    @property
    def count(self) -> int:
        return len(self.members)

    @property
    def total(self) -> float:
        return sum(_key(m.score) if m.score is not None else 0.0 for m in self.members)

    @property
    def mean(self) -> float:
        return self.total / self.count

    @property
    def first(self) -> int:
        return min(m.completion.index for m in self.members)

    def representative(self) -> Candidate:
        return rank_best(self.members)[0]


def groups_of(candidates: Sequence[Candidate]) -> list[Group]:
    by_id: dict[int, Group] = {}
    for c in candidates:
        if c.group is not None:
            by_id.setdefault(c.group, Group(c.group, [])).members.append(c)
    return list(by_id.values())


def pick_by_groups(
    candidates: Sequence[Candidate], k: int, rule: Literal["weighted_vote", "majority"]
) -> list[Candidate]:
    """The representatives of the k best groups; short of groups, the best other candidates."""
    groups = groups_of(candidates)
    if rule == "majority":
        groups.sort(key=lambda g: (-g.count, -g.total, g.first))
    else:
        groups.sort(key=lambda g: (-g.total, -g.count, g.first))
    chosen = [g.representative() for g in groups[:k]]
    if len(chosen) < k:
        taken = {c.completion.index for c in chosen}
        chosen += [c for c in rank_best(candidates) if c.completion.index not in taken][
            : k - len(chosen)
        ]
    return chosen


def pick_best_of_majority(
    candidates: Sequence[Candidate], k: int, alpha: float
) -> tuple[list[Candidate], int]:
    """Best-of-majority: groups with frequency >= alpha ranked by mean score; (chosen, groups
    that qualified)."""
    total = len(candidates)
    groups = [g for g in groups_of(candidates) if g.count / total >= alpha]
    groups.sort(key=lambda g: (-g.mean, -g.count, g.first))
    return [g.representative() for g in groups[:k]], len(groups)


def as_choices(chosen: Sequence[Candidate]) -> list[Choice]:
    return [
        Choice(
            index=i,
            text=c.completion.text,
            token_ids=c.completion.token_ids,
            finish_reason=c.completion.finish_reason,
            logprobs=c.completion.logprobs,
            score=c.score,
        )
        for i, c in enumerate(chosen)
    ]


def candidate_report(
    candidates: Sequence[Candidate], chosen: Sequence[Candidate]
) -> list[dict[str, object]]:
    picked = {c.completion.index for c in chosen}
    return [c.as_dict(c.completion.index in picked) for c in candidates]

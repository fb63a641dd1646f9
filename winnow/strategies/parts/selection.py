"""What best-of-N and best-of-majority share: sample N, score, group by final answer.

Selection rules (search-and-learn's and the Best-of-Majority paper's):

* ``best`` — highest score.
* ``weighted_vote`` — group equal final answers, sum the scores per group, best group wins.
* ``majority`` — group equal final answers, count per group (no reward calls at all).
* best-of-majority — groups frequent enough (at least ``max(min_count, ceil(alpha * N))``
  members, or the largest groups when none is that large), ranked by MEAN score.
* ``confidence`` — DeepConf's offline vote: the top ``eta`` of the candidates by their token
  confidence (recorded inside the engine) vote, each with its confidence, times its reward's
  probability when a reward is used (:func:`pick_by_confidence`).

Scores that are added up (a vote), averaged (best-of-majority) or multiplied (``prod``) are read
as probabilities first (:func:`probability_reading`): a reward whose scale is a probability as it
is, any other (a logit, a raw head, a weighted sum with a logit in it) through a sigmoid. On a
logit scale a sum rewards the wrong thing: three answers at -1 (total -3) would lose to one at
-2. ``best`` and ``min``/``last`` only compare scores, which the sigmoid does not change.

An unscored candidate (the reward gave NaN) is the worst: last in every ranking, probability 0 in
every vote and mean (never 0 on the reward's own scale, which on a logit scale is a high score).

Ties break towards the earlier candidate (lower index), so results are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from winnow.answers.groups import answers_and_groups_async
from winnow.engine.base import CONFIDENCE_STOP, Completion, Generation
from winnow.metering.engine import MeteredEngine
from winnow.protocol.requests import REFERENCE_DESCRIPTION, Reference
from winnow.protocol.trace import (
    MAX_CURVE,
    TRACE_DESCRIPTION,
    CandidateConfidence,
    Trace,
    TraceCandidate,
    TraceGroup,
    finite,
)
from winnow.rewards.base import OutcomeItem, ProcessItem, Tapped, split_steps
from winnow.rewards.registry import RewardRef
from winnow.strategies.base import Choice, GenerationRequest, Rewards, StrategyParams
from winnow.strategies.parts.confidence import (
    ConfidenceParams,
    ConfidenceVote,
    TraceConfidence,
    keep_top,
    weighted_vote,
)
from winnow.strategies.parts.readings import (
    Aggregation,
    Reading,
    aggregate,
    aggregated_reading,
    as_is,
    probability,
    probability_reading,
    sigmoid,
)
from winnow.strategies.registry import StrategyError

__all__ = [  # the readings are imported from here by the strategies and tests
    "Aggregation", "Reading", "aggregate", "aggregated_reading", "as_is", "probability",
    "probability_reading", "sigmoid",
]  # fmt: skip

RewardField = Field(
    "default",
    description='A configured reward name, or weights over rewards ({"default": 1, "x": 0.5}).',
)


CONFIDENCE_DESCRIPTION = (
    "Read the policy's token confidence inside the engine (DeepConf): window, top_k, "
    "statistic, eta, tail; used by selection 'confidence' (defaults if absent) and reported "
    "with the candidates and in the trace."
)


class SelectionParams(StrategyParams):
    n: int = Field(4, ge=1, le=1024, description="Candidates to sample (N).")
    reward: str | dict[str, float] = RewardField
    token_confidence: ConfidenceParams | None = Field(None, description=CONFIDENCE_DESCRIPTION)
    aggregation: Aggregation = Field(
        "last",
        description="How a PRM's step scores become one: the last, the lowest, or the product "
        "of the steps' probabilities (prod; a logit-scale reward through a sigmoid).",
    )
    reference: Reference | None = Field(None, description=REFERENCE_DESCRIPTION)
    return_candidates: bool = Field(False, description="Add every candidate to the response.")
    trace: bool = Field(False, description=TRACE_DESCRIPTION)

    def candidates(self) -> int:
        return self.n

    def check(self, request: GenerationRequest) -> None:
        check_candidates(request, self.n)


def check_candidates(request: GenerationRequest, n: int) -> None:
    """``n`` sampled candidates can serve ``request``: it asks for no more choices than that, and
    samples (N > 1 identical greedy answers would be one)."""
    if request.spec.n > n:
        raise StrategyError(f"n={request.spec.n} choices asked from strategy.n={n} candidates", "n")
    if n > 1 and request.spec.temperature == 0:
        raise StrategyError("sampling N > 1 candidates needs temperature > 0", "temperature")


@dataclass(slots=True)
class Candidate:
    completion: Completion
    score: float | None = None
    answer: str | None = None
    group: int | None = None
    tapped: Tapped | None = None  # what the engine scored while generating it
    confidence: TraceConfidence | None = None  # its token confidence, when recorded

    @property
    def cut(self) -> bool:
        """The engine ended it for low confidence (it has no final answer of its own)."""
        return self.completion.stop_reason == CONFIDENCE_STOP

    @property
    def generated(self) -> int:
        """Tokens the engine generated for it (a cut's sentinel too)."""
        return len(self.completion.token_ids) + self.completion.unseen_tokens

    def as_dict(self, chosen: bool) -> dict[str, object]:
        c = self.completion
        report = {
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
        if self.confidence is not None:
            stats = self.confidence
            report["confidence"] = {
                "lowest_group": stats.lowest_group,
                "bottom_10": stats.bottom_10,
                "tail": stats.tail,
                "mean": stats.mean,
                "cut": self.cut,
            }
        return report


def tap_for(rewards: Rewards, engine: MeteredEngine, reward: RewardRef) -> tuple[str, ...]:
    """The probe heads the engine can score for ``reward`` while it samples (outcome rewards:
    a process reward scores steps, which the tap does not serve yet)."""
    if rewards.info(reward).kind != "outcome":
        return ()
    return rewards.tap_heads(reward, engine.info.tap_model)


async def sample_candidates(
    request: GenerationRequest,
    engine: MeteredEngine,
    n: int,
    tap: tuple[str, ...] = (),
    confidence: ConfidenceParams | None = None,
) -> tuple[str, list[Candidate]]:
    """N samples in ONE engine call (the prompt is prefilled once); returns the prompt text.
    ``tap``: probe heads the engine scores while it generates (:meth:`Rewards.tap_heads`);
    ``confidence``: the engine records each sample's token confidence too."""
    spec = request.spec.replace(
        n=n, tap=tap, confidence=None if confidence is None else confidence.spec()
    )
    candidates = candidates_of(await engine.generate(spec), confidence)
    await read_answers(candidates)
    return request.prompt_text, candidates


def candidates_of(
    generation: Generation, confidence: ConfidenceParams | None = None, first: int = 0
) -> list[Candidate]:
    """The candidates of one engine call (indexed from ``first``), with what the engine read
    while it generated them: the tap's scores, and their confidence statistics."""
    prompt_ids = tuple(generation.prompt_token_ids)
    candidates = []
    for i, c in enumerate(generation.completions):
        c.index = first + i
        tapped = Tapped(prompt_ids, tuple(c.token_ids), c.tap) if c.tap else None
        stats = None
        if confidence is not None and c.confidence is not None:
            stats = confidence.of(c.confidence.values)
        candidates.append(Candidate(c, tapped=tapped, confidence=stats))
    return candidates


async def read_answers(candidates: Sequence[Candidate]) -> None:
    """Each candidate's final answer and answer group (equal answers share one), in place; a
    sample the engine cut for low confidence has neither (it stopped before answering)."""
    answers, groups = await answers_and_groups_async([c.completion.text for c in candidates])
    for candidate, answer, group in zip(candidates, answers, groups, strict=True):
        if candidate.cut:
            answer, group = None, None
        candidate.answer, candidate.group = answer, group


async def score_candidates(
    prompt: str,
    candidates: list[Candidate],
    rewards: Rewards,
    params: SelectionParams,
) -> Reading:
    """Score every candidate with the request's reward (one batched call); returns how the
    scores read as probabilities (for votes and means)."""
    reading = probability_reading(rewards, params.reward)
    if rewards.info(params.reward).kind == "process":
        items = [
            ProcessItem(prompt, split_steps(c.completion.text), reference=params.reference)
            for c in candidates
        ]
        scored = await rewards.score_steps(params.reward, items)
        scores = [aggregate(s, params.aggregation, reading) for s in scored.scores]
        reading = aggregated_reading(reading, params.aggregation)
    else:
        outcome = [
            OutcomeItem(prompt, c.completion.text, params.reference, c.tapped) for c in candidates
        ]
        scores = (await rewards.score(params.reward, outcome)).scores
    for candidate, score in zip(candidates, scores, strict=True):
        candidate.score = None if math.isnan(score) else float(score)
    return reading


def _key(score: float | None) -> float:
    """Ranking key: an unscored candidate (None, NaN) is below every score."""
    return -math.inf if score is None or math.isnan(score) else score


def rank_best(candidates: Sequence[Candidate]) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (-_key(c.score), c.completion.index))


@dataclass(slots=True)
class Group:
    id: int
    members: list[Candidate]

    @property
    def count(self) -> int:
        return len(self.members)

    def total(self, reading: Reading = as_is) -> float:
        """The group's vote: its members' scores read as probabilities, summed."""
        return sum(probability(m.score, reading) for m in self.members)

    def mean(self, reading: Reading = as_is) -> float:
        return self.total(reading) / self.count

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


def fill(chosen: list[Candidate], candidates: Sequence[Candidate], k: int) -> list[Candidate]:
    """``chosen``, then the best-scored other candidates until there are ``k``."""
    taken = {c.completion.index for c in chosen}
    others = [c for c in rank_best(candidates) if c.completion.index not in taken]
    return chosen + others[: max(k - len(chosen), 0)]


def pick_by_groups(
    candidates: Sequence[Candidate],
    k: int,
    rule: Literal["weighted_vote", "majority"],
    reading: Reading = as_is,
) -> list[Candidate]:
    """The representatives of the k best groups; short of groups, the best other candidates.
    ``reading`` turns scores into votes (the reward's :func:`probability_reading`)."""
    groups = groups_of(candidates)
    totals = {g.id: g.total(reading) for g in groups}
    if rule == "majority":
        groups.sort(key=lambda g: (-g.count, -totals[g.id], g.first))
    else:
        groups.sort(key=lambda g: (-totals[g.id], -g.count, g.first))
    return fill([g.representative() for g in groups[:k]], candidates, k)


def confidence_weights(
    candidates: Sequence[Candidate], params: ConfidenceParams, reading: Reading | None = None
) -> tuple[list[float | None], list[float | None]]:
    """(statistics, vote weights): each candidate's confidence statistic, and its weight in the
    vote: the statistic, times its reward's probability when scored (``reading``)."""
    stats = [c.confidence.get(params.statistic) if c.confidence else None for c in candidates]
    if reading is None:
        return stats, list(stats)
    weights = [
        None if s is None else s * probability(c.score, reading)
        for s, c in zip(stats, candidates, strict=True)
    ]
    return stats, weights


def confidence_vote(
    candidates: Sequence[Candidate], params: ConfidenceParams, reading: Reading | None = None
) -> ConfidenceVote:
    """DeepConf's offline vote: the top ``eta`` of the answered candidates by their confidence
    statistic vote with :func:`confidence_weights`; with no statistic known, every answered
    candidate votes with weight 1 (a plain, or reward-weighted, vote)."""
    stats, weights = confidence_weights(candidates, params, reading)
    groups = [c.group for c in candidates]
    answered = [i for i, g in enumerate(groups) if g is not None]
    known = [i for i in answered if stats[i] is not None]
    if not known:
        plain = [1.0 if reading is None else probability(c.score, reading) for c in candidates]
        return weighted_vote(groups, plain, answered)
    kept = keep_top([stats[i] for i in known], params.eta)
    return weighted_vote(groups, weights, [known[i] for i in kept])


def pick_by_confidence(
    candidates: Sequence[Candidate],
    k: int,
    params: ConfidenceParams,
    reading: Reading | None = None,
) -> tuple[list[Candidate], ConfidenceVote]:
    """The representatives of the k groups the confidence vote weighs most (each group's
    best-scored member, or its most confident one without a reward); short of groups, the
    best other candidates."""
    vote = confidence_vote(candidates, params, reading)
    stats, _ = confidence_weights(candidates, params)
    ranked = sorted(vote.weights, key=lambda g: -vote.weights[g])  # stable: first seen first
    chosen = []
    for group in ranked[:k]:
        members = [i for i in vote.voters if candidates[i].group == group]
        if reading is None:
            best = min(members, key=lambda i: (-_key(stats[i]), candidates[i].completion.index))
            chosen.append(candidates[best])
        else:
            chosen.append(rank_best([candidates[i] for i in members])[0])
    return fill(chosen, candidates, k), vote


MIN_COUNT = 2
"""best-of-majority's default floor on a group's size: see :func:`majority_threshold`."""


def majority_threshold(
    candidates: Sequence[Candidate], alpha: float, min_count: int = MIN_COUNT
) -> int:
    """Members a group needs to pass best-of-majority's frequency filter.

    The paper keeps answers with frequency >= alpha; with its alpha = 0.01 that keeps every
    answer at any N < 100 (one answer is already 1/N), and the rule becomes "best mean score",
    best-of-N's failure. So a group needs ``max(min_count, ceil(alpha * N))`` members, capped at
    the largest group's size: when no answer is that frequent (e.g. no answer repeats), the most
    frequent ones pass. Counts only, so the filter does not depend on the reward's scale.
    ``benchmarks/quality/bom_filter.py`` measured the default (min_count 2) against the others.
    """
    groups = groups_of(candidates)
    if not groups:
        return 0
    needed = max(min_count, math.ceil(alpha * len(candidates) - 1e-9), 1)
    return min(needed, max(g.count for g in groups))


def pick_best_of_majority(
    candidates: Sequence[Candidate],
    k: int,
    alpha: float,
    reading: Reading = as_is,
    min_count: int = MIN_COUNT,
    value: Callable[[Candidate], float] | None = None,
) -> tuple[list[Candidate], int]:
    """Best-of-majority: groups passing :func:`majority_threshold`, ranked by the MEAN of their
    scores read as probabilities (or of ``value`` of each member); (chosen, groups that
    passed). When no answer parses (no group), the best-scored candidate, so a response always
    has a choice."""
    needed = majority_threshold(candidates, alpha, min_count)
    groups = [g for g in groups_of(candidates) if g.count >= needed]
    means = {g.id: g.mean(reading) for g in groups}
    if value is not None:  # e.g. each member's confidence weight
        means = {g.id: math.fsum(value(m) for m in g.members) / g.count for g in groups}
    groups.sort(key=lambda g: (-means[g.id], -g.count, g.first))
    chosen = [g.representative() for g in groups[:k]]
    if not chosen:
        chosen = fill([], candidates, 1)
    return chosen, len(groups)


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


def selection_trace(
    strategy: str,
    candidates: Sequence[Candidate],
    chosen: Sequence[Candidate],
    selection: str,
    reading: Reading | None = None,
    passed: Callable[[Group], bool] | None = None,
    waves: Sequence[int] | None = None,
    trace: Trace | None = None,
    vote: ConfidenceVote | None = None,
    thresholds: Sequence[float | None] | None = None,
) -> Trace:
    """The trace of a selection: every candidate (the chosen ones first when the list is full),
    the answer groups with their votes, and the winners. ``passed`` is best-of-majority's
    frequency filter; ``waves`` the wave of each candidate (adaptive); ``trace`` one to add
    to (tree search's, with its nodes); ``vote`` the confidence vote (its weights are the
    groups' votes), ``thresholds`` the confidence threshold each candidate ran under."""
    trace = trace or Trace(strategy=strategy)
    trace.selection = selection
    picked = [c.completion.index for c in chosen]
    room = trace.limits.max_entries
    keep = set(picked[:room])
    for c in candidates:
        if len(keep) >= room:
            break
        keep.add(c.completion.index)
    trace.dropped += len(candidates) - len(keep)
    for position, c in enumerate(candidates):
        if c.completion.index not in keep:
            continue
        text = c.completion.text
        trace.candidates.append(
            TraceCandidate(
                index=c.completion.index,
                text=trace.text(text),
                chars=len(text),
                tokens=len(c.completion.token_ids),
                finish_reason=c.completion.finish_reason,
                score=finite(c.score),
                answer=c.answer,
                group=c.group,
                chosen=c.completion.index in picked,
                wave=None if waves is None else waves[position],
                confidence=_trace_confidence(
                    c, vote, position, None if thresholds is None else thresholds[position]
                ),
            )
        )
    winning_groups = {c.group for c in chosen if c.group is not None}
    for g in groups_of(candidates):
        total = g.total(reading) if reading is not None else None
        if vote is not None:
            total = vote.weights.get(g.id, 0.0)
        trace.add(
            trace.groups,
            TraceGroup(
                id=g.id,
                answer=g.members[0].answer,
                members=[m.completion.index for m in g.members],
                count=g.count,
                vote=finite(total),
                mean=finite(None if total is None else total / g.count),
                passed=None if passed is None else passed(g),
                winner=g.id in winning_groups,
            ),
        )
    trace.winner = picked
    return trace


def _trace_confidence(
    candidate: Candidate, vote: ConfidenceVote | None, position: int, threshold: float | None
) -> CandidateConfidence | None:
    stats, records = candidate.confidence, candidate.completion.confidence
    if stats is None or records is None:
        return None
    weight = None if vote is None else vote.weight_of(position)
    return CandidateConfidence(
        window=stats.window,
        lowest_group=finite(stats.lowest_group),
        bottom_10=finite(stats.bottom_10),
        tail=finite(stats.tail),
        mean=finite(stats.mean),
        weight=finite(weight),
        cut=records.cut,
        threshold=threshold,
        curve=[None if v is None else round(v, 4) for v in records.values[:MAX_CURVE]],
    )

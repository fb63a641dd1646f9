"""Best-of-Majority (pass@k): among answers frequent enough, the best by mean reward.

As published: sample N, score each; group equal final answers; group reward = MEAN score; keep
the frequent groups; return the top k groups' representatives (their best-scored member). Fewer
than k come back when fewer groups pass; answers that cannot be parsed form no group, and when
no answer parses at all the best-scored candidate comes back (a response always has a choice).

Our choice where the paper's setting does not carry over: "frequent" is a count of at least
``max(min_count, ceil(alpha * N))`` (capped at the largest group's size), not only frequency >=
alpha. With the published alpha = 0.01 a single answer passes at any N < 100, and the rule is
"best mean score", which degrades with N as best-of-N does; ``min_count`` = 2 keeps only answers
given more than once (see :func:`winnow.strategies.parts.selection.majority_threshold` and
``benchmarks/results/bom_filter.md`` for the measurement behind the default).

With ``token_confidence`` (DeepConf's token confidence, recorded inside the engine) a member's value
is its confidence statistic times its reward's probability, or the statistic alone when
``reward`` is null: best-of-majority with no reward model.
"""

from __future__ import annotations

from pydantic import Field

from winnow.metering.engine import MeteredEngine
from winnow.strategies.base import GenerationRequest, Rewards, StrategyResult
from winnow.strategies.parts.selection import (
    MIN_COUNT,
    Candidate,
    SelectionParams,
    as_choices,
    as_is,
    candidate_report,
    confidence_weights,
    groups_of,
    majority_threshold,
    pick_best_of_majority,
    sample_candidates,
    score_candidates,
    selection_trace,
    tap_for,
)
from winnow.strategies.registry import StrategyError, register


class BestOfMajorityParams(SelectionParams):
    k: int | None = Field(None, ge=1, description="Answers to return (pass@k); default: n.")
    alpha: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Minimum answer frequency: a group needs ceil(alpha * n) members (and "
        "min_count).",
    )
    min_count: int = Field(
        MIN_COUNT,
        ge=1,
        description="A group needs at least this many members (2: answers given more than once; "
        "1: the published filter, which passes every answer when n < 1/alpha); capped at the "
        "largest group's size, so when no answer repeats all pass.",
    )
    reward: str | dict[str, float] | None = Field(
        "default",
        description='A configured reward name, or weights over rewards ({"default": 1, "x": '
        "0.5}); null: none (then strategy.token_confidence ranks the groups).",
    )

    def check(self, request: GenerationRequest) -> None:
        super().check(request)
        if self.k is not None and request.spec.n not in (1, self.k):
            raise StrategyError("give either n or strategy.k (they mean the same here)", "n")
        if (self.k or request.spec.n) > self.n:
            raise StrategyError(f"k={self.k} answers asked from strategy.n={self.n}", "strategy.k")
        if self.reward is None and self.token_confidence is None:
            raise StrategyError(
                "best_of_majority ranks answers by a reward or by strategy.token_confidence",
                "strategy.reward",
            )


@register("best_of_majority", BestOfMajorityParams)
async def best_of_majority(
    request: GenerationRequest, engine: MeteredEngine, rewards: Rewards
) -> StrategyResult:
    """Return the k most rewarded answers among those with frequency >= alpha."""
    params = request.params
    assert isinstance(params, BestOfMajorityParams)
    k = params.k or request.spec.n
    scored = params.reward is not None
    if scored:
        rewards.info(params.reward)
    tap = tap_for(rewards, engine, params.reward) if scored else ()
    confidence = params.token_confidence
    prompt, candidates = await sample_candidates(request, engine, params.n, tap, confidence)
    reading = await score_candidates(prompt, candidates, rewards, params) if scored else as_is
    value = None
    if confidence is not None:
        _, weights = confidence_weights(candidates, confidence, reading if scored else None)
        by_index = {c.completion.index: w or 0.0 for c, w in zip(candidates, weights, strict=True)}

        def value(member: Candidate) -> float:
            return by_index[member.completion.index]

    chosen, qualifying = pick_best_of_majority(
        candidates, k, params.alpha, reading, params.min_count, value
    )
    report = None
    if params.return_candidates:
        report = candidate_report(candidates, chosen)
    needed = majority_threshold(candidates, params.alpha, params.min_count)
    trace = None
    if params.trace:
        trace = selection_trace(
            "best_of_majority",
            candidates,
            chosen,
            "best_of_majority",
            reading if scored else None,
            passed=lambda g: g.count >= needed,
        )
    return StrategyResult(
        as_choices(chosen),
        candidates=report,
        details={
            "candidates": len(candidates),
            "groups": len(groups_of(candidates)),
            "min_group_size": needed,
            "qualifying_groups": qualifying,
            "returned": len(chosen),
            "fallback": None if qualifying else "no parseable answer: the best-scored candidate",
        },
        trace=trace,
    )

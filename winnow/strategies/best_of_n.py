"""Best-of-N: sample N in one engine call, score them in one reward call, select.

The client's ``n`` is how many choices come back (``n=2`` returns the two best); ``strategy.n``
is how many candidates are sampled. With ``selection="majority"`` no reward is called.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from winnow.metering.engine import MeteredEngine
from winnow.strategies.base import GenerationRequest, Rewards, StrategyResult
from winnow.strategies.parts.selection import (
    SelectionParams,
    as_choices,
    as_is,
    candidate_report,
    pick_by_groups,
    rank_best,
    sample_candidates,
    score_candidates,
    selection_trace,
    tap_for,
)
from winnow.strategies.registry import register


class BestOfNParams(SelectionParams):
    selection: Literal["best", "weighted_vote", "majority"] = Field(
        "best",
        description="best score; weighted_vote: the answer whose candidates' scores, read as "
        "probabilities (a logit-scale reward through a sigmoid), sum highest; or plain majority.",
    )


@register("best_of_n", BestOfNParams)
async def best_of_n(
    request: GenerationRequest, engine: MeteredEngine, rewards: Rewards
) -> StrategyResult:
    """Sample N candidates, score each with a reward, return the best n (or vote)."""
    params = request.params
    assert isinstance(params, BestOfNParams)
    if params.selection != "majority":
        rewards.info(params.reward)  # an unknown reward fails before any sampling
    scored = params.selection != "majority"
    tap = tap_for(rewards, engine, params.reward) if scored else ()
    prompt, candidates = await sample_candidates(request, engine, params.n, tap)
    reading = as_is  # majority: no scores; ties between equal counts stay by index
    if scored:
        reading = await score_candidates(prompt, candidates, rewards, params)
    if params.selection == "best":
        chosen = rank_best(candidates)[: request.spec.n]
    else:
        chosen = pick_by_groups(candidates, request.spec.n, params.selection, reading)
    return StrategyResult(
        as_choices(chosen),
        candidates=candidate_report(candidates, chosen) if params.return_candidates else None,
        details={"candidates": len(candidates), "selection": params.selection},
        trace=selection_trace(
            "best_of_n", candidates, chosen, params.selection, reading if scored else None
        )
        if params.trace
        else None,
    )

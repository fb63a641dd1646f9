"""Best-of-Majority (pass@k): among answers frequent enough, the best by mean reward.

As published: sample N, score each; group equal final answers; frequency = count / N, group
reward = MEAN score; keep groups with frequency >= alpha; return the top k groups'
representatives (their best-scored member). Fewer than k come back when fewer groups qualify;
answers that cannot be parsed form no group.
"""

from __future__ import annotations

from pydantic import Field

from winnow.strategies.base import GenerationRequest, MeteredEngine, Rewards, StrategyResult
from winnow.strategies.registry import StrategyError, register
from winnow.strategies.selection import (
    SelectionParams,
    as_choices,
    candidate_report,
    groups_of,
    pick_best_of_majority,
    sample_candidates,
    score_candidates,
)


class BestOfMajorityParams(SelectionParams):
    k: int | None = Field(None, ge=1, description="Answers to return (pass@k); default: n.")
    alpha: float = Field(0.01, ge=0.0, le=1.0, description="Minimum answer frequency.")

    def check(self, request: GenerationRequest) -> None:
        super().check(request)
        if self.k is not None and request.n not in (1, self.k):
            raise StrategyError("give either n or strategy.k (they mean the same here)", "n")
        if (self.k or request.n) > self.n:
            raise StrategyError(f"k={self.k} answers asked from strategy.n={self.n}", "strategy.k")


@register("best_of_majority", BestOfMajorityParams)
async def best_of_majority(
    request: GenerationRequest, engine: MeteredEngine, rewards: Rewards
) -> StrategyResult:
    """Return the k most rewarded answers among those with frequency >= alpha."""
    params = request.params
    assert isinstance(params, BestOfMajorityParams)
    k = params.k or request.n
    rewards.info(params.reward)
    prompt, candidates = await sample_candidates(request, engine, params.n)
    await score_candidates(prompt, candidates, rewards, params)
    chosen, qualifying = pick_best_of_majority(candidates, k, params.alpha)
    report = None
    if params.return_candidates:
        report = candidate_report(candidates, chosen)
    return StrategyResult(
        as_choices(chosen),
        candidates=report,
        details={
            "candidates": len(candidates),
            "groups": len(groups_of(candidates)),
            "qualifying_groups": qualifying,
            "returned": len(chosen),
        },
    )

"""Best-of-N: sample N in one engine call, score them in one reward call, select.

The client's ``n`` is how many choices come back (``n=2`` returns the two best); ``strategy.n``
is how many candidates are sampled. With ``selection="majority"`` no reward is called; with
``selection="confidence"`` the engine records each candidate's token confidence and the most
confident ones vote (DeepConf offline), weighted by the reward too unless ``reward`` is null.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from winnow.metering.engine import MeteredEngine
from winnow.strategies.base import GenerationRequest, Rewards, StrategyResult
from winnow.strategies.parts.confidence import ConfidenceParams
from winnow.strategies.parts.selection import (
    SelectionParams,
    as_choices,
    as_is,
    candidate_report,
    pick_by_confidence,
    pick_by_groups,
    rank_best,
    sample_candidates,
    score_candidates,
    selection_trace,
    tap_for,
)
from winnow.strategies.registry import StrategyError, register


class BestOfNParams(SelectionParams):
    selection: Literal["auto", "best", "weighted_vote", "majority", "confidence"] = Field(
        "auto",
        description="auto: best score while the request is in the reward's domain (a reward "
        "that knows its domain says; one that does not is trusted), majority vote outside it; "
        "best score; weighted_vote: the answer whose candidates' scores, read as "
        "probabilities (a logit-scale reward through a sigmoid), sum highest; plain majority; "
        "or confidence: the top eta of the candidates by token confidence vote with it (times "
        "the reward's probability unless reward is null).",
    )
    reward: str | dict[str, float] | None = Field(
        "default",
        description='A configured reward name, or weights over rewards ({"default": 1, "x": '
        "0.5}); null: none (selection majority or confidence).",
    )

    def check(self, request: GenerationRequest) -> None:
        super().check(request)
        if self.reward is None and self.selection in ("auto", "best", "weighted_vote"):
            raise StrategyError(
                f"selection {self.selection!r} needs strategy.reward", "strategy.reward"
            )

    def reading_confidence(self) -> ConfidenceParams | None:
        """The confidence settings, when the engine must record it."""
        if self.selection == "confidence":
            return self.token_confidence or ConfidenceParams()
        return self.token_confidence


@register("best_of_n", BestOfNParams)
async def best_of_n(
    request: GenerationRequest, engine: MeteredEngine, rewards: Rewards
) -> StrategyResult:
    """Sample N candidates, score each with a reward, return the best n (or vote)."""
    params = request.params
    assert isinstance(params, BestOfNParams)
    scored = params.selection != "majority" and params.reward is not None
    if scored:
        rewards.info(params.reward)  # an unknown reward fails before any sampling
    tap = tap_for(rewards, engine, params.reward) if scored else ()
    confidence = params.reading_confidence()
    prompt, candidates = await sample_candidates(request, engine, params.n, tap, confidence)
    reading = as_is  # majority: no scores; ties between equal counts stay by index
    if scored:
        reading = await score_candidates(prompt, candidates, rewards, params)
    vote, selection, domain = None, params.selection, None
    if selection == "auto":  # the reward's pick where it knows the question, else the vote
        verdicts = await rewards.domain_of(params.reward, [prompt], [candidates[0].tapped])
        domain = verdicts[0] if verdicts else None
        selection = "best" if domain is None or domain.in_domain else "majority"
        if selection == "majority":
            reading = as_is
    if selection == "confidence":
        assert confidence is not None
        chosen, vote = pick_by_confidence(
            candidates, request.spec.n, confidence, reading if scored else None
        )
    elif selection == "best":
        chosen = rank_best(candidates)[: request.spec.n]
    else:
        chosen = pick_by_groups(candidates, request.spec.n, selection, reading)
    details: dict[str, object] = {"candidates": len(candidates), "selection": params.selection}
    if params.selection == "auto":
        details |= {
            "selected_by": selection,
            "domain": None if domain is None else domain.model_dump(),
        }
    if vote is not None:
        details |= {"voters": len(vote.voters), "leader_share": vote.share}
    return StrategyResult(
        as_choices(chosen),
        candidates=candidate_report(candidates, chosen) if params.return_candidates else None,
        details=details,
        trace=selection_trace(
            "best_of_n",
            candidates,
            chosen,
            selection,
            reading if scored and selection != "majority" else None,
            vote=vote,
        )
        if params.trace
        else None,
    )

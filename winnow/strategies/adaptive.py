"""Adaptive: sample in waves until the answer is settled, then select as best_of_n does.

Each wave is ONE engine call with n = the wave's size; the prompt is prefilled by the first and
served from the prefix cache afterwards. After each wave a stopping rule
(:mod:`winnow.strategies.parts.stopping`: adaptive consistency's Dirichlet posterior, a wave that
agrees, or the posterior on reward-weighted votes, optionally "a candidate the reward trusts
enough") decides whether another wave could still change the answer. At the end the chosen
answers are selected from ALL waves by ``majority``, ``weighted_vote`` or ``best``, with the
selection code best_of_n uses.

With ``rule: "confidence"`` it is DeepConf's online mode (Fu et al., 2025): the engine records
every sample's token confidence; the first wave is the warm-up, whose traces set the threshold
(the top-``eta`` bar of their lowest group confidences) unless the request fixes one; every
later sample is ended inside the engine as soon as its group confidence falls below it (a cut
trace does not vote), and sampling stops once the leading answer holds ``confidence`` (tau) of
the confidence-weighted votes (times the reward's probabilities when a reward is given).
``selection: "confidence"`` chooses by the same vote. ``race: true`` runs a wave's samples as
separate streams and asks the rule after each answer, cancelling the wave's rest when it stops:
the answer comes when it is settled, not when the wave's longest sample ends. The ``deepconf``
strategy is this with DeepConf's settings and no reward.

Easy questions stop after one wave; split ones go on to ``max_n``; a token ``budget`` caps the
total (waves shrink to what it can still pay for at ``max_tokens`` per sample, so it is never
passed). With a request ``seed``, wave k's samples get seeds seed + (answers drawn before), the
seeds vLLM gives the children of one n-sample call: the waves are the first answers of the
best_of_n call with the same seed. The response's ``winnow.details`` says how many waves ran and
why it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from winnow.engine.base import Completion, Generation
from winnow.metering.engine import MeteredEngine
from winnow.protocol.requests import REFERENCE_DESCRIPTION, Reference
from winnow.protocol.trace import TRACE_DESCRIPTION, TraceWave, finite
from winnow.strategies.base import GenerationRequest, Rewards, StrategyParams, StrategyResult
from winnow.strategies.parts.confidence import ConfidenceParams, ConfidenceVote, warmup_threshold
from winnow.strategies.parts.race import race
from winnow.strategies.parts.selection import (
    CONFIDENCE_DESCRIPTION,
    Aggregation,
    Candidate,
    Reading,
    as_choices,
    as_is,
    candidate_report,
    candidates_of,
    confidence_weights,
    groups_of,
    pick_by_confidence,
    pick_by_groups,
    probability,
    rank_best,
    read_answers,
    score_candidates,
    selection_trace,
    tap_for,
)
from winnow.strategies.parts.stopping import RuleName, Stopping, Vote, run_waves, verdict
from winnow.strategies.registry import StrategyError, register

Selection = Literal["majority", "weighted_vote", "best", "confidence"]


class AdaptiveParams(StrategyParams):
    wave: int = Field(4, ge=1, le=1024, description="Answers sampled per wave (one engine call).")
    min_n: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Answers drawn before the rule may stop (default: one wave; at least the "
        "request's n).",
    )
    max_n: int = Field(32, ge=1, le=1024, description="The most answers drawn in all.")
    rule: RuleName = Field(
        "dirichlet",
        description="dirichlet: adaptive consistency, stop when P(the leading answer is the "
        "most likely one | counts) >= confidence (uniform Dirichlet over the answers seen plus "
        "'anything else'); agreement: stop after a wave whose answers all agree; weighted: the "
        "same posterior on votes weighted by the reward's probabilities (needs a reward); "
        "confidence: DeepConf online, stop when the leader holds `confidence` of the "
        "confidence-weighted votes, later waves cut below the first wave's threshold.",
    )
    confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1.0,
        description="Posterior the dirichlet / weighted rules stop at; the rule confidence's "
        "consensus share (DeepConf's tau).",
    )
    accept: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Also stop as soon as one answer's reward probability reaches this (needs "
        "a reward; scores read as probabilities, a logit-scale reward through a sigmoid).",
    )
    reward: str | dict[str, float] | None = Field(
        None,
        description='A configured reward name, or weights over rewards ({"default": 1, "x": '
        "0.5}); needed by rule weighted, accept, and selection best / weighted_vote.",
    )
    selection: Selection = Field(
        "majority",
        description="How the answers of all waves are chosen from: majority vote, weighted_vote "
        "(scores read as probabilities, summed per answer), best score, or confidence (the top "
        "eta by token confidence vote with it, times the reward's probability with a reward).",
    )
    token_confidence: ConfidenceParams | None = Field(None, description=CONFIDENCE_DESCRIPTION)
    race: bool = Field(
        False,
        description="Run each wave's samples as separate streams and ask the rule after every "
        "answer, cancelling the wave's rest once it stops (rules dirichlet, weighted, "
        "confidence).",
    )
    aggregation: Aggregation = Field(
        "last", description="How a PRM's step scores become one: last, min, or prod."
    )
    budget: int | None = Field(
        None,
        ge=1,
        description="The most tokens generated in all waves (kept and discarded); waves shrink "
        "so that it is never passed (a sample is counted at max_tokens in advance).",
    )
    reference: Reference | None = Field(None, description=REFERENCE_DESCRIPTION)
    return_candidates: bool = Field(False, description="Add every candidate to the response.")
    trace: bool = Field(False, description=TRACE_DESCRIPTION)

    def candidates(self) -> int:
        return self.max_n

    def token_budget(self, request: GenerationRequest) -> int:
        worst = self.max_n * request.spec.max_tokens
        return worst if self.budget is None else min(worst, self.budget)

    def check(self, request: GenerationRequest) -> None:
        if request.spec.n > self.max_n:
            raise StrategyError(
                f"n={request.spec.n} choices asked from strategy.max_n={self.max_n} answers", "n"
            )
        if self.max_n > 1 and request.spec.temperature == 0:
            raise StrategyError("sampling N > 1 candidates needs temperature > 0", "temperature")
        if self.min_n is not None and self.min_n > self.max_n:
            raise StrategyError(
                f"strategy.min_n={self.min_n} is above strategy.max_n={self.max_n}",
                "strategy.min_n",
            )
        if self.rule == "agreement" and self.wave < 2:
            raise StrategyError("rule 'agreement' needs waves of at least 2", "strategy.wave")
        if self.rule == "agreement" and self.race:
            raise StrategyError("rule 'agreement' reads whole waves: no race", "strategy.race")
        if self.reward is None:
            needs = [
                what
                for what, needed in (
                    ("rule 'weighted'", self.rule == "weighted"),
                    ("accept", self.accept is not None),
                    (
                        f"selection {self.selection!r}",
                        self.selection in ("weighted_vote", "best"),
                    ),
                )
                if needed
            ]
            if needs:
                raise StrategyError(
                    f"{' and '.join(needs)} need strategy.reward", "strategy.reward"
                )
        n, max_tokens = request.spec.n, request.spec.max_tokens
        if self.budget is not None and self.budget < n * max_tokens:
            raise StrategyError(
                f"strategy.budget={self.budget} tokens cannot pay for {n} answer(s) of "
                f"max_tokens={max_tokens}",
                "strategy.budget",
            )

    def stopping(self, request: GenerationRequest) -> Stopping:
        return stopping_for(self, request.spec.n, request.spec.max_tokens)

    def reading_confidence(self) -> ConfidenceParams | None:
        """The confidence settings, when the engine must record it."""
        if self.rule == "confidence" or self.selection == "confidence":
            return self.token_confidence or ConfidenceParams()
        return self.token_confidence

    def scores_every_wave(self) -> bool:
        """The rule reads the reward after every wave (or every answer, racing)."""
        weighs = self.rule == "confidence" and self.reward is not None
        return self.rule == "weighted" or self.accept is not None or weighs


def stopping_for(params: AdaptiveParams, n: int, max_tokens: int) -> Stopping:
    """The stopping rule of a request asking for ``n`` answers of ``max_tokens``."""
    min_n = max(params.min_n if params.min_n is not None else params.wave, n)
    return Stopping(
        rule=params.rule,
        confidence=params.confidence,
        wave=params.wave,
        min_n=min(min_n, params.max_n),
        max_n=params.max_n,
        accept=params.accept,
        budget=params.budget,
        max_tokens=max_tokens,
    )


def choose(
    candidates: Sequence[Candidate], k: int, selection: Selection, reading: Reading = as_is
) -> list[Candidate]:
    """The k chosen answers, as best_of_n chooses them."""
    if selection == "best":
        return rank_best(candidates)[:k]
    return pick_by_groups(candidates, k, selection, reading)


def votes_of(
    candidates: Sequence[Candidate],
    reading: Reading | None,
    confidence: ConfidenceParams | None = None,
) -> list[Vote]:
    """The rule's view of the candidates (a probability only where they were scored; with
    ``confidence``, each one's confidence weight)."""
    weights: list[float | None] = [None] * len(candidates)
    if confidence is not None:
        _, weights = confidence_weights(candidates, confidence, reading)
    return [
        Vote(
            c.group,
            None if reading is None or c.score is None else probability(c.score, reading),
            c.generated,
            weight,
        )
        for c, weight in zip(candidates, weights, strict=True)
    ]


@register("adaptive", AdaptiveParams)
async def adaptive(
    request: GenerationRequest, engine: MeteredEngine, rewards: Rewards
) -> StrategyResult:
    """Sample in waves until another wave could not change the answer, then select."""
    params = request.params
    assert isinstance(params, AdaptiveParams)
    return await run_adaptive("adaptive", request, engine, rewards, params)


async def run_adaptive(
    name: str,
    request: GenerationRequest,
    engine: MeteredEngine,
    rewards: Rewards,
    params: AdaptiveParams,
) -> StrategyResult:
    """The waves, the rule and the selection (``adaptive``, and ``deepconf``'s preset of it)."""
    if params.reward is not None:
        rewards.info(params.reward)  # an unknown reward fails before any sampling
    stopping = params.stopping(request)
    per_wave = params.scores_every_wave()
    scored = params.reward is not None and (per_wave or params.selection != "majority")
    tap: tuple[str, ...] = ()  # scored inside the engine when the reward is read at all
    if scored:
        tap = tap_for(rewards, engine, params.reward)
    confidence = params.reading_confidence()
    online = params.rule == "confidence" and confidence is not None
    threshold = None if confidence is None else confidence.threshold
    candidates: list[Candidate] = []
    thresholds: list[float | None] = []  # the threshold each candidate ran under
    reading: Reading | None = None
    wave_of: list[int] = []  # each candidate's wave
    waves: list[TraceWave] = []

    def votes() -> list[Vote]:
        weigh = reading if params.reward is not None else None
        return votes_of(candidates, weigh, confidence if online else None)

    async def take(new: list[Candidate]) -> None:
        """Add candidates: their answers (all regrouped) and, when the rule reads it, scores."""
        nonlocal reading
        candidates.extend(new)
        wave_of.extend([len(waves)] * len(new))
        thresholds.extend([threshold] * len(new))
        await read_answers(candidates)
        if per_wave:  # one reward call per wave (per answer, racing), for the new ones only
            reading = await score_candidates(request.prompt_text, new, rewards, params)

    async def draw(k: int) -> list[Vote]:
        nonlocal threshold
        seed = None if request.spec.seed is None else request.spec.seed + len(candidates)
        spec = request.spec.replace(
            n=k,
            seed=seed,
            tap=tap,
            confidence=None if confidence is None else confidence.spec(threshold),
        )
        first = len(candidates)
        if params.race:

            async def settle(completion: Completion, prompt: list[int]) -> bool:
                generation = Generation(prompt, [completion])
                await take(candidates_of(generation, confidence, completion.index))
                return verdict(stopping, votes(), 1).stop

            await race(engine, spec, k, first, settle)
        else:
            await take(candidates_of(await engine.generate(spec), confidence, first))
        if online and threshold is None and confidence is not None:  # the warm-up is over
            warm = [c.confidence.lowest_group for c in candidates if c.confidence is not None]
            threshold = warmup_threshold(warm, confidence.eta)
        said = votes()
        if params.trace:  # the rule's verdict after this wave, as run_waves will compute it
            verdict_now = verdict(stopping, said, k)
            waves.append(
                TraceWave(
                    index=len(waves),
                    size=k,
                    drawn=len(candidates),
                    leader=verdict_now.leader,
                    confidence=finite(verdict_now.confidence),
                    share=finite(verdict_now.share),
                    stop=verdict_now.stop,
                    reason=verdict_now.reason,
                )
            )
        return said

    outcome = await run_waves(stopping, draw)
    if scored and reading is None:  # scored once, at the end
        reading = await score_candidates(request.prompt_text, candidates, rewards, params)
    vote: ConfidenceVote | None = None
    if params.selection == "confidence":
        assert confidence is not None
        weigh = reading if params.reward is not None else None
        chosen, vote = pick_by_confidence(candidates, request.spec.n, confidence, weigh)
    else:
        chosen = choose(candidates, request.spec.n, params.selection, reading or as_is)
    last = outcome.verdict
    trace = None
    if params.trace:
        trace = selection_trace(
            name,
            candidates,
            chosen,
            params.selection,
            reading,
            waves=wave_of,
            vote=vote,
            thresholds=thresholds if confidence is not None else None,
        )
        trace.waves = waves[: trace.limits.max_entries]
        trace.threshold = threshold if online else None
        if trace.waves and not trace.waves[-1].stop:  # ended by max_n or the budget
            trace.waves[-1].stop, trace.waves[-1].reason = True, outcome.reason
    details: dict[str, object] = {
        "waves": len(outcome.waves),
        "wave_sizes": outcome.waves,
        "candidates": len(candidates),
        "stopped": outcome.reason,
        "rule": params.rule,
        "selection": params.selection,
        "confidence": None if last is None else last.confidence,
        "leader_share": None if last is None else last.share,
        "groups": len(groups_of(candidates)),
    }
    if confidence is not None:
        details |= {
            "threshold": threshold,
            "cut": sum(1 for c in candidates if c.cut),
            "cancelled": max(sum(outcome.waves) - len(candidates), 0),
        }
    return StrategyResult(
        as_choices(chosen),
        candidates=candidate_report(candidates, chosen) if params.return_candidates else None,
        details=details,
        trace=trace,
    )

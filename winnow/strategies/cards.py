"""CARDS: cascade reward sampling, segment-level rejection sampling (Li et al., 2024).

The answer grows one *segment* at a time. A segment ends where the model becomes uncertain
(next-token entropy over the full vocabulary >= ``entropy_threshold`` nats after at least
``min_segment_tokens`` tokens; at most ``max_segment_tokens``; or end of sequence); the engine
cuts it there itself (``SamplingSpec.segment``: a logits processor inside vLLM), so no token past
the cut is written and thrown away. Each candidate segment is scored with an outcome reward on
the whole prefix (prompt + accepted segments + candidate) and accepted against a rising
threshold:

    r0     = (1 - alpha) * RM(prompt) + alpha * r_star
    tau(t) = min(r_star, r0 + t * (r_star - r0) / horizon)   t = tokens incl. the segment,
                                                              horizon = max_tokens by default
    accept with probability min(1, exp((r - tau(t)) / beta))       (soft)   or   r >= tau(t) (hard)

After ``max_rejections`` rejections in a row the best candidate since the last acceptance is
taken. ``beta`` is both the sampling temperature and the acceptance temperature, as published.

Accepted segments stream to the client as soon as they are accepted (real streaming: nothing is
sent that is later taken back; with stop strings, the last len(stop) - 1 characters wait for the
next segment, since a stop may span two segments). ``n`` > 1 runs n independent chains at once
(the engine and the reward batcher merge their calls).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from winnow.engine.base import SEGMENT_STOP, Completion, FinishReason, TapScores
from winnow.engine.processors.specs import SegmentSpec
from winnow.engine.tapped import gather_calls
from winnow.metering.engine import MeteredEngine
from winnow.protocol.requests import REFERENCE_DESCRIPTION, Reference
from winnow.protocol.trace import TRACE_DESCRIPTION, Trace, TraceSegment, finite
from winnow.rewards.base import OutcomeItem, Tapped, join_tap
from winnow.strategies.base import (
    Choice,
    ChoiceDelta,
    GenerationRequest,
    Rewards,
    StrategyParams,
    StrategyResult,
)
from winnow.strategies.parts.selection import RewardField
from winnow.strategies.parts.steps import straddling, tokens_covering
from winnow.strategies.registry import StrategyError, register


class CardsParams(StrategyParams):
    reward: str | dict[str, float] = RewardField
    r_star: float | None = Field(
        None,
        description="Target reward; default: the reward's calibrated r_star (GET /v1/rewards).",
    )
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="Start of the threshold schedule.")
    beta: float = Field(0.7, gt=0.0, le=5.0, description="Sampling + acceptance temperature.")
    acceptance: Literal["soft", "hard"] = "soft"
    entropy_threshold: float = Field(3.0, gt=0.0, description="Nats; a segment ends here.")
    min_segment_tokens: int = Field(4, ge=1, le=256)
    max_segment_tokens: int = Field(64, ge=1, le=1024)
    max_rejections: int = Field(20, ge=1, le=200, description="Then take the best candidate.")
    horizon: int | None = Field(
        None,
        ge=1,
        description="Tokens over which tau rises from r0 to r_star; default max_tokens (as "
        "published). Answers much shorter than max_tokens meet a threshold near r0 unless this "
        "is set near their length.",
    )
    top_k: int = Field(40, ge=0, description="Top-k sampling (0: off).")
    log_odds: bool = Field(
        True,
        description="Score a probability reward as log(p / (1 - p)), the unbounded scale of the "
        "paper's reward models on which beta is meaningful; r_star is then on that scale too.",
    )
    reference: Reference | None = Field(None, description=REFERENCE_DESCRIPTION)
    trace: bool = Field(False, description=TRACE_DESCRIPTION)

    def token_budget(self, request: GenerationRequest) -> int:
        # every token position can be sampled (max_rejections + 1) times at worst
        return request.spec.n * request.spec.max_tokens * (self.max_rejections + 1)

    def check(self, request: GenerationRequest) -> None:
        if self.min_segment_tokens > self.max_segment_tokens:
            raise StrategyError(
                "min_segment_tokens must not exceed max_segment_tokens",
                "strategy.min_segment_tokens",
            )


def threshold(t: int, r0: float, r_star: float, max_tokens: int) -> float:
    """tau(t): rises linearly from r0 towards r_star over the token budget, then stays."""
    return min(r_star, r0 + t * (r_star - r0) / max_tokens)


def accepts(
    score: float, tau: float, beta: float, rule: Literal["soft", "hard"], draw: float
) -> bool:
    """Soft: accept with probability min(1, exp((r - tau) / beta)); ``draw`` ~ U[0, 1)."""
    if math.isnan(score):
        return False
    if rule == "hard":
        return score >= tau
    return draw < math.exp(min(0.0, (score - tau) / beta))


def _ranks_above(score: float, best: float) -> bool:
    """``score`` beats ``best``; NaN (unscored) is below every score, so a NaN candidate is
    forced in only when every candidate since the last acceptance was unscored."""
    return not math.isnan(score) and (math.isnan(best) or score > best)


@dataclass(slots=True)
class ChainStats:
    segments: int = 0
    candidates: int = 0
    rejections: int = 0
    forced: int = 0  # segments taken after max_rejections rejections in a row
    rejections_per_segment: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Chain:
    """One CARDS answer under construction."""

    index: int
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish: FinishReason | None = None
    score: float | None = None
    stats: ChainStats = field(default_factory=ChainStats)
    tap: TapScores = field(default_factory=dict)  # the engine's scores, prompt's last token on
    sent_chars: int = 0  # streamed so far
    sent_ids: int = 0


def uses_log_odds(params: CardsParams, rewards: Rewards) -> bool:
    return params.log_odds and rewards.info(params.reward).scale.startswith("probability")


def log_odds(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def r_star_for(params: CardsParams, rewards: Rewards) -> float:
    """The request's r_star, else the reward's calibrated one (on the scale cards scores on)."""
    if params.r_star is not None:
        return params.r_star
    info = rewards.info(params.reward)
    calibration = info.extra.get("calibration") if isinstance(params.reward, str) else None
    key = "r_star_log_odds" if uses_log_odds(params, rewards) else "r_star"
    if isinstance(calibration, dict) and key in calibration:
        return float(calibration[key])  # type: ignore[arg-type]
    raise StrategyError(
        f"reward {params.reward!r} has no calibrated r_star; pass strategy.r_star "
        "(a high quantile of this reward on sampled answers is a good start)",
        "strategy.r_star",
    )


@register("cards", CardsParams, streams=True)
async def cards(
    request: GenerationRequest, engine: MeteredEngine, rewards: Rewards
) -> StrategyResult:
    """Segment-level rejection sampling: accept uncertainty-delimited segments by reward."""
    params = request.params
    assert isinstance(params, CardsParams)
    if rewards.info(params.reward).kind != "outcome":
        raise StrategyError("cards scores prefixes with an outcome reward", "strategy.reward")
    r_star = r_star_for(params, rewards)
    prompt_ids = tuple(
        request.spec.prompt
        if isinstance(request.spec.prompt, tuple)
        else await engine.tokenize(request.spec.prompt, add_special_tokens=True)
    )
    scale = log_odds if uses_log_odds(params, rewards) else float
    heads = rewards.tap_heads(params.reward, engine.info.tap_model)
    r_prompt = (
        await rewards.score(params.reward, [await prompt_item(request, prompt_ids, heads, engine)])
    ).scores[0]
    if math.isnan(r_prompt):  # min(r_star, NaN) would quietly pin tau at r_star
        raise StrategyError(
            f"reward {params.reward!r} gave no score (NaN) for the prompt without an answer; "
            "cards needs RM(prompt) to start its threshold: use an outcome reward that scores it",
            "strategy.reward",
        )
    r0 = (1 - params.alpha) * scale(r_prompt) + params.alpha * r_star
    chains = [Chain(i) for i in range(request.spec.n)]
    trace = Trace(strategy="cards", r0=r0, r_star=r_star) if params.trace else None
    bounds = (r0, r_star)  # chains grow at once; one's error is raised as a single call's
    await gather_calls(
        grow(chain, request, prompt_ids, bounds, scale, engine, rewards, trace, heads)
        for chain in chains
    )
    stats = [c.stats for c in chains]
    if trace is not None:
        trace.winner = [c.index for c in chains]
    return StrategyResult(
        [Choice(c.index, c.text, c.token_ids, c.finish, score=c.score) for c in chains],
        details={
            "r_star": r_star,
            "r0": r0,
            "segments": sum(s.segments for s in stats),
            "candidates": sum(s.candidates for s in stats),
            "rejections": sum(s.rejections for s in stats),
            "forced_accepts": sum(s.forced for s in stats),
            "rejections_per_segment": [s.rejections_per_segment for s in stats],
        },
        streamed=request.sink is not None,
        trace=trace,
    )


def item(request: GenerationRequest, response: str, tapped: Tapped | None = None) -> OutcomeItem:
    params = request.params
    assert isinstance(params, CardsParams)
    return OutcomeItem(request.prompt_text, response, params.reference, tapped)


async def prompt_item(
    request: GenerationRequest,
    prompt_ids: tuple[int, ...],
    heads: tuple[str, ...],
    engine: MeteredEngine,
) -> OutcomeItem:
    """RM(prompt), the threshold's start: with the engine's tap, read from a one-token call
    (whose prefill every chain then reuses from the prefix cache) instead of a reward pass."""
    if not heads:
        return item(request, "")
    first = await engine.generate(
        request.spec.replace(prompt=prompt_ids, n=1, max_tokens=1, logprobs=None, tap=heads)
    )
    scores = first.completions[0].tap or {}
    return item(request, "", Tapped(prompt_ids, (), {h: s[:1] for h, s in scores.items()}))


async def grow(
    chain: Chain,
    request: GenerationRequest,
    prompt_ids: tuple[int, ...],
    schedule: tuple[float, float],
    scale: Callable[[float], float],
    engine: MeteredEngine,
    rewards: Rewards,
    trace: Trace | None = None,
    heads: tuple[str, ...] = (),
) -> None:
    """Grow one answer segment by segment until EOS, a stop, or max_tokens; with a ``trace``,
    every candidate segment goes into it. ``heads``: probe heads the engine scores as it
    writes (the prefix's scores carry over from the segments accepted before)."""
    r0, r_star = schedule
    params = request.params
    assert isinstance(params, CardsParams)
    seed0 = request.spec.seed
    rng = random.Random(None if seed0 is None else seed0 * 1_000_003 + chain.index)
    calls = 0
    while chain.finish is None:
        remaining = request.spec.max_tokens - len(chain.token_ids)
        # (score, raw reward, proposal, its trace entry)
        best: tuple[float, float, Proposal, TraceSegment | None] | None = None
        rejected = 0
        while True:
            seed = None if seed0 is None else seed0 + 7919 * chain.index + calls
            calls += 1
            spec = request.spec.replace(
                prompt=prompt_ids + tuple(chain.token_ids),
                n=1,
                max_tokens=min(params.max_segment_tokens, remaining),
                temperature=params.beta,
                top_k=params.top_k,
                seed=seed,
                logprobs=None,
                segment=SegmentSpec(
                    entropy=params.entropy_threshold, min_tokens=params.min_segment_tokens
                ),
                tap=heads,
            )
            generation = await engine.generate(spec)
            segment = generation.completions[0]
            proposal = await propose(chain, segment, request, engine)
            tapped = None
            if proposal.tap:
                tapped = Tapped(prompt_ids, tuple(proposal.token_ids), proposal.tap)
            scored = await rewards.score(params.reward, [item(request, proposal.text, tapped)])
            raw = scored.scores[0]
            score = scale(raw) if not math.isnan(raw) else raw
            chain.stats.candidates += 1
            horizon = params.horizon or request.spec.max_tokens
            tau = threshold(len(proposal.token_ids), r0, r_star, horizon)
            entry = None
            if trace is not None:
                new_text = proposal.text[len(chain.text) :]
                entry = TraceSegment(
                    chain=chain.index,
                    position=chain.stats.segments,
                    attempt=rejected,
                    start=len(chain.token_ids),
                    tokens=max(len(proposal.token_ids) - len(chain.token_ids), 0),
                    generated=generation.generated_tokens,
                    text=trace.text(new_text),
                    chars=len(new_text),
                    score=finite(score),
                    tau=tau,
                    outcome="rejected",
                )
                trace.add(trace.segments, entry)
            if best is None or _ranks_above(score, best[0]):
                best = (score, raw, proposal, entry)  # an unscored (NaN) first one is replaced
            if accepts(score, tau, params.beta, params.acceptance, rng.random()):
                best = (score, raw, proposal, entry)
                if entry is not None:
                    entry.outcome = "accepted"
                break
            rejected += 1
            if rejected >= params.max_rejections:
                chain.stats.forced += 1
                if best[3] is not None:
                    best[3].outcome = "forced"
                break
        _, raw, proposal, _ = best
        await accept(chain, proposal, raw, request)
        chain.stats.segments += 1
        chain.stats.rejections += rejected
        chain.stats.rejections_per_segment.append(rejected)


@dataclass(slots=True)
class Proposal:
    """The chain as it would be with a candidate segment accepted."""

    token_ids: list[int]
    text: str
    finish: FinishReason | None  # None: the answer goes on
    tap: TapScores = field(default_factory=dict)  # as Chain.tap, with the segment's


async def propose(
    chain: Chain, segment: Completion, request: GenerationRequest, engine: MeteredEngine
) -> Proposal:
    ids = [*chain.token_ids, *segment.token_ids]
    text = await engine.detokenize(ids)
    if segment.finish_reason == "stop" and segment.stop_reason == SEGMENT_STOP:
        finish: FinishReason | None = "length" if len(ids) >= request.spec.max_tokens else None
    elif segment.finish_reason == "length" and len(ids) < request.spec.max_tokens:
        finish = None  # only the segment cap was hit: keep going
    else:
        finish = segment.finish_reason or "length"
    tap = join_tap(chain.tap, segment.tap, len(chain.token_ids))
    # The engine saw only this segment, so a stop string that began in the accepted text and
    # ends in the segment got past it: cut the answer before it, as the engine would have.
    if hit := straddling(text, request.spec.stop, len(chain.text)):
        at = hit[0]
        ids = await tokens_covering(engine, ids, at)
        text, finish = text[:at], "stop"
    return Proposal(ids, text, finish, tap)


async def accept(
    chain: Chain, proposal: Proposal, score: float, request: GenerationRequest
) -> None:
    chain.token_ids = proposal.token_ids
    chain.text = proposal.text
    chain.finish = proposal.finish
    chain.score = None if math.isnan(score) else score
    chain.tap = proposal.tap
    if request.sink is None:
        return
    # While the answer goes on, hold back what could be the start of a stop string spanning
    # into the next segment: nothing is streamed that a later cut would take back.
    hold = 0 if chain.finish else max((len(s) - 1 for s in request.spec.stop), default=0)
    end = max(chain.sent_chars, len(chain.text) - hold)
    delta, ids = chain.text[chain.sent_chars : end], chain.token_ids[chain.sent_ids :]
    chain.sent_chars, chain.sent_ids = end, max(chain.sent_ids, len(chain.token_ids))
    if delta or ids or chain.finish:
        await request.sink.send([ChoiceDelta(chain.index, delta, ids, chain.finish)])

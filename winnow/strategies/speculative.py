"""Speculative rejection (Sun et al. 2024): best-of-N that stops writing the candidates the
reward already dislikes.

``n`` candidates start as separate engine streams (the prompt is prefilled once and shared
through the prefix cache). At each decision point (after ``first_decision`` tokens, then every
``interval``, once every running candidate has written that many) the running candidates'
partial responses, cut at that many tokens, are scored and the lowest ``rejection_rate`` share
of them is aborted, which frees their KV blocks at once, never leaving fewer candidates than the
client's ``n``. Candidates that finished before a decision point are never aborted. Survivors run
to the end, and the best by the reward's score of the whole response are returned.

Partial scores cost nothing when the engine taps the reward (an outcome probe on this engine's
final layer, the shipped ``default``: the state at the decision point was scored while it was
generated); any other outcome reward scores the cut texts in one batched call per decision
point, and its reward tokens count in usage. ``winnow.details`` reports the decision points.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass

from pydantic import Field

from winnow.answers.groups import answers_and_groups_async
from winnow.metering.engine import MeteredEngine
from winnow.protocol.requests import REFERENCE_DESCRIPTION, Reference
from winnow.rewards.base import OutcomeItem
from winnow.strategies.base import GenerationRequest, Rewards, StrategyParams, StrategyResult
from winnow.strategies.parts.selection import (
    Candidate,
    RewardField,
    as_choices,
    candidate_report,
    check_candidates,
    rank_best,
)
from winnow.strategies.parts.written import Written
from winnow.strategies.registry import StrategyError, register


class SpeculativeRejectionParams(StrategyParams):
    n: int = Field(16, ge=1, le=1024, description="Candidates started.")
    reward: str | dict[str, float] = RewardField
    rejection_rate: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Share of the running candidates aborted per decision (1: all of them that "
        "may go, keeping the client's n best by partial score if too few have finished).",
    )
    interval: int = Field(32, ge=1, description="Tokens between decision points.")
    first_decision: int | None = Field(
        None,
        ge=1,
        description="Tokens before the first decision point (default: `interval`). Candidates "
        "that finish before it are never aborted: with short answers, a first decision near the "
        "answers' length aborts the long runs, which are rarely right.",
    )
    reference: Reference | None = Field(None, description=REFERENCE_DESCRIPTION)
    return_candidates: bool = Field(False, description="Add every candidate to the response.")

    def candidates(self) -> int:
        return self.n

    def check(self, request: GenerationRequest) -> None:
        check_candidates(request, self.n)


@dataclass(slots=True)
class Run(Written):
    """One candidate as it is written, and what became of it."""

    done: bool = False
    rejected_at: int | None = None  # the decision point that aborted it
    error: BaseException | None = None


@register("speculative_rejection", SpeculativeRejectionParams)
async def speculative_rejection(
    request: GenerationRequest, engine: MeteredEngine, rewards: Rewards
) -> StrategyResult:
    """Start N candidates, abort the reward's lowest share at each decision point, return the
    best finished ones (Sun et al. 2024)."""
    params = request.params
    assert isinstance(params, SpeculativeRejectionParams)
    if rewards.info(params.reward).kind != "outcome":
        raise StrategyError("speculative_rejection needs an outcome reward", "strategy.reward")
    tap = rewards.tap_heads(params.reward, engine.info.tap_model)
    runs = [Run(i) for i in range(params.n)]
    prompt_ids: list[tuple[int, ...]] = []
    changed = asyncio.Event()

    async def drive(run: Run) -> None:
        seed = None if request.spec.seed is None else request.spec.seed + run.index
        spec = request.spec.replace(n=1, seed=seed, tap=tap)
        try:
            async with contextlib.aclosing(engine.stream(spec)) as events:
                async for event in events:
                    if not prompt_ids:
                        prompt_ids.append(tuple(event.prompt_token_ids))
                    for delta in event.deltas:
                        run.add(delta)
                    changed.set()
        except asyncio.CancelledError:
            if run.rejected_at is None:
                raise
        except Exception as exc:  # raised by the strategy, not lost in a task
            run.error = exc
        finally:
            run.done = True
            changed.set()

    tasks = [asyncio.create_task(drive(run)) for run in runs]
    decisions: list[dict[str, object]] = []
    try:
        point = params.first_decision or params.interval
        while True:
            alive = [r for r in runs if r.rejected_at is None]
            running = [r for r in alive if not r.done]  # aborted ones may not have stopped yet
            if not running:
                break
            # score at `point` tokens once each running candidate is past it (the tap has
            # scored a token's state once the next token is out)
            while not all(r.done or len(r.token_ids) > point for r in running):
                changed.clear()
                await changed.wait()
                _raise_failed(runs)
            running = [r for r in alive if not r.done]
            reject = min(
                math.floor(params.rejection_rate * len(running)), len(alive) - request.spec.n
            )
            if reject > 0:
                scores = await _partial_scores(
                    request, engine, rewards, params, running, point, prompt_ids
                )
                lowest = sorted(
                    zip(scores, running, strict=True), key=lambda p: (p[0], -p[1].index)
                )
                for _, run in lowest[:reject]:
                    run.rejected_at = point
                    tasks[run.index].cancel()
                decisions.append({"tokens": point, "running": len(running), "aborted": reject})
            elif len(alive) <= request.spec.n:
                break  # nothing more may be aborted: let the rest finish
            point += params.interval
        await asyncio.gather(*tasks, return_exceptions=True)
        _raise_failed(runs)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    survivors = [r for r in runs if r.rejected_at is None]
    candidates = await _final_scores(request, rewards, params, survivors, prompt_ids)
    chosen = rank_best(candidates)[: request.spec.n]
    report = None
    if params.return_candidates:
        report = candidate_report(candidates, chosen) + [
            {"index": r.index, "text": "".join(r.text), "tokens": len(r.token_ids),
             "aborted_at": r.rejected_at, "chosen": False}
            for r in runs if r.rejected_at is not None
        ]  # fmt: skip
    return StrategyResult(
        as_choices(chosen),
        candidates=report,
        details={
            "candidates": params.n,
            "finished": len(survivors),
            "aborted": params.n - len(survivors),
            "decisions": decisions,
            "partial_scores": "engine tap" if tap else "reward call",
        },
    )


def _raise_failed(runs: list[Run]) -> None:
    for run in runs:
        if run.error is not None:
            raise run.error


async def _partial_scores(
    request: GenerationRequest,
    engine: MeteredEngine,
    rewards: Rewards,
    params: SpeculativeRejectionParams,
    running: list[Run],
    point: int,
    prompt_ids: list[tuple[int, ...]],
) -> list[float]:
    """The reward's score of each running candidate's first ``point`` tokens (NaN: lowest)."""
    ids = prompt_ids[0] if prompt_ids else ()
    texts = await asyncio.gather(*(engine.detokenize(r.token_ids[:point]) for r in running))
    items = [
        OutcomeItem(request.prompt_text, text, params.reference, r.tapped(ids, point))
        for r, text in zip(running, texts, strict=True)
    ]
    scored = await rewards.score(params.reward, items)
    return [-math.inf if math.isnan(s) else s for s in scored.scores]


async def _final_scores(
    request: GenerationRequest,
    rewards: Rewards,
    params: SpeculativeRejectionParams,
    survivors: list[Run],
    prompt_ids: list[tuple[int, ...]],
) -> list[Candidate]:
    ids = prompt_ids[0] if prompt_ids else ()
    candidates = [Candidate(r.completion(), tapped=r.tapped(ids)) for r in survivors]
    answers, groups = await answers_and_groups_async([c.completion.text for c in candidates])
    for candidate, answer, group in zip(candidates, answers, groups, strict=True):
        candidate.answer, candidate.group = answer, group
    items = [
        OutcomeItem(request.prompt_text, c.completion.text, params.reference, c.tapped)
        for c in candidates
    ]
    scored = await rewards.score(params.reward, items)
    for candidate, score in zip(candidates, scored.scores, strict=True):
        candidate.score = None if math.isnan(score) else float(score)
    return candidates

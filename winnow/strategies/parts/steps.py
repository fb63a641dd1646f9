"""Step-level search on token ids: beams, expansions and scoring, shared by step searches.

A beam is the prompt's token ids plus the ids it generated, so every expansion is a plain
continuation of a prefix the engine has just seen: vLLM's prefix cache serves the prompt and the
beam's earlier steps, and only the new step is computed. The text of a beam is kept as the texts
of its steps (each step keeps its delimiter), which is what a process reward scores.

Expansions of one round run as one :class:`asyncio.TaskGroup`: if the request is cancelled (client
gone, wall time), or one call fails, every other call of the round is cancelled too, and
cancelling an engine call aborts its engine request (see :mod:`winnow.engine.base`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from winnow.answers.final import stated_answer
from winnow.engine.base import (
    Completion,
    FinishReason,
    Generation,
    SamplingSpec,
    TapScores,
    TokenLogprob,
)
from winnow.engine.tapped import gather_calls
from winnow.metering.engine import MeteredEngine
from winnow.rewards.base import OutcomeItem, ProcessItem, Tapped, join_tap
from winnow.strategies.base import Rewards
from winnow.strategies.parts.selection import Aggregation, Reading, aggregate, as_is


@dataclass(slots=True)
class Beam:
    """A partial (or finished) response: its generated token ids and its steps' texts."""

    ids: list[int] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    step_scores: list[float] = field(default_factory=list)  # one per step, as last scored
    logprobs: list[TokenLogprob] | None = None
    subtree: int = 0  # DVTS: which independent subtree the beam belongs to
    partial: bool = False  # the last step is unfinished (early rejection)
    step_ids: int = 0  # tokens of the last step so far
    finish_reason: FinishReason | None = None  # set once the beam has left the search
    scored: bool = False  # step_scores cover the beam as it is now
    node: int | None = None  # its node in the request's trace (when traced)
    tap: TapScores = field(default_factory=dict)  # the engine's scores of its tokens' states

    @property
    def text(self) -> str:
        return "".join(self.steps)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def score(self, how: Aggregation, reading: Reading = as_is) -> float | None:
        """The aggregated step scores; None when unscored (NaN), which ranks last."""
        value = aggregate(self.step_scores, how, reading)
        return None if math.isnan(value) else float(value)

    def extend(self, completion: Completion, text: str, *, new_step: bool) -> Beam:
        """A child (``new_step``) or a continuation of this beam's last step, as a new beam."""
        steps = list(self.steps)
        if new_step and (text.strip() or not steps):
            steps.append(text)
        elif steps:  # continuing a step, or a blank "step" that belongs to the previous one
            steps[-1] += text
        logprobs = None
        if self.logprobs is not None or completion.logprobs is not None:
            logprobs = [*(self.logprobs or []), *(completion.logprobs or [])]
        return Beam(
            ids=[*self.ids, *completion.token_ids],
            steps=steps,
            step_scores=list(self.step_scores),
            logprobs=logprobs,
            subtree=self.subtree,
            step_ids=(0 if new_step else self.step_ids) + len(completion.token_ids),
            tap=join_tap(self.tap, completion.tap, len(self.ids)),
        )

    def tapped(self, prompt_ids: tuple[int, ...]) -> Tapped | None:
        return Tapped(prompt_ids, tuple(self.ids), self.tap) if self.tap and prompt_ids else None


def has_final_answer(text: str) -> bool:
    """True when ``text`` states its final answer explicitly (``\\boxed{}``, "The answer is
    ...", ``#### n``): a bare last number does not count, it may be an intermediate result."""
    return stated_answer(text) is not None  # one answer grammar for the whole project


async def generate_all(engine: MeteredEngine, specs: Sequence[SamplingSpec]) -> list[Generation]:
    """Run ``specs`` concurrently (the engine batches them); cancel all if one fails or the
    caller is cancelled, so no engine request outlives the round."""
    return await gather_calls(engine.generate(spec) for spec in specs)


async def step_text(
    engine: MeteredEngine, completion: Completion, delimiter: str, request_stop: Sequence[str]
) -> str:
    """The completion's text, in line with its token ids.

    When the delimiter ends a step, vLLM cuts the text right after it, but the last token may
    reach past it (a token "\\n\\n\\n" for the delimiter "\\n\\n"). The next step continues
    from the ids, so the text must say what the ids say. A stop string of the request itself is
    not kept (OpenAI's rule), although steps keep theirs.
    """
    text = completion.text
    reason = completion.stop_reason
    if reason == delimiter:
        decoded = await engine.detokenize(completion.token_ids)
        if decoded != text and decoded.startswith(text):
            text = decoded
    elif isinstance(reason, str) and reason in request_stop and text.endswith(reason):
        text = text[: -len(reason)]
    return text


def straddling(text: str, marks: Sequence[str], boundary: int) -> tuple[int, str] | None:
    """The earliest of ``marks`` (stop strings, a step delimiter) that begins before
    ``boundary`` and ends after it, as (position, mark). An engine that was given only the text
    from ``boundary`` on (a continuation, a next segment) could not have caught it."""
    found = [
        (at, mark)
        for mark in marks
        if 0 <= (at := text.find(mark, max(0, boundary - len(mark) + 1))) < boundary
    ]
    return min(found) if found else None


async def tokens_covering(engine: MeteredEngine, ids: Sequence[int], chars: int) -> list[int]:
    """The shortest prefix of ``ids`` whose text has at least ``chars`` characters."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(await engine.detokenize(ids[:mid])) >= chars:
            hi = mid
        else:
            lo = mid + 1
    return list(ids[:lo])


async def score_beams(
    beams: Sequence[Beam],
    prompt: str,
    rewards: Rewards,
    reward: str | dict[str, float],
    kind: str,
    reference: str | None,
    prompt_ids: tuple[int, ...] = (),
) -> None:
    """Score every beam in ONE reward call and store its per-step scores.

    A process reward scores every step of each prefix (the last one as a partial step when the
    beam is partial). An outcome reward scores each prefix's text as it stands; its earlier
    steps keep the scores they got when they were the last step. With ``prompt_ids`` (the
    prompt the beams' ids continue), a probe reward reads the scores the engine's tap wrote.
    """
    if not beams:
        return
    if kind == "process":
        items = [
            ProcessItem(prompt, tuple(b.steps), b.partial, reference, tapped=b.tapped(prompt_ids))
            for b in beams
        ]
        scored = await rewards.score_steps(reward, items)
        for beam, scores in zip(beams, scored.scores, strict=True):
            beam.step_scores, beam.scored = [float(s) for s in scores], True
        return
    outcome = [OutcomeItem(prompt, b.text, reference, b.tapped(prompt_ids)) for b in beams]
    result = await rewards.score(reward, outcome)
    for beam, score in zip(beams, result.scores, strict=True):
        beam.step_scores = [*beam.step_scores[: max(len(beam.steps) - 1, 0)], float(score)]
        beam.scored = True

"""Engine calls with a channel from the engine's processors (the reward tap, ``SamplingSpec.tap``:
the N samples, each scored by probe heads on the policy's own final hidden states while vLLM
generated it, :mod:`.processors.tap`; token confidence, ``SamplingSpec.confidence``: each
sample's token confidences and where the engine ended it, :mod:`.processors.confidence`).

vLLM runs ``n > 1`` as ``n`` child requests that share one ``SamplingParams``, so a processor
cannot tell the children apart; a channelled call sends the ``n`` requests itself (child ``i``
seeded ``seed + i``, as vLLM seeds its children), each with its own files. The prompt is
prefilled once and shared through the prefix cache either way.

The engine never computes the state of a candidate's last token (nothing is sampled after it).
A reward that reads it (a candidate that ran out of tokens with its answer at the very end) finds
no score there and has the engine compute it when, and only when, it reads it
(:mod:`winnow.rewards.engine_prefill`: a one-token prefill, counted as reward tokens), rather
than every ``length``-finished candidate paying a one-token continuation, read or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from winnow.engine.base import (
    CONFIDENCE_STOP,
    Completion,
    Generation,
    SamplingSpec,
    StreamEvent,
    TapScores,
)
from winnow.engine.confidence import ConfidenceRecords, read_confidence
from winnow.engine.processors.specs import TapSpec
from winnow.engine.tap_files import RecordReader, read_records, tap_files


@dataclass(frozen=True, slots=True)
class Channels:
    """One request's files: the tap's (None: untapped) and the confidence file (None: none)."""

    tap: TapSpec | None = None
    confidence: str | None = None


OneCall = Callable[[SamplingSpec, Channels], Awaitable[Generation]]
"""The local engine's single vLLM request with its channels (``VllmEngine._generate``)."""
OneStream = Callable[[SamplingSpec, Channels], AsyncIterator[StreamEvent]]
T = TypeVar("T")


def channelled(spec: SamplingSpec) -> bool:
    """Whether the call needs a channel from the engine's processors."""
    return bool(spec.tap) or spec.confidence is not None


async def generate_channelled(call: OneCall, spec: SamplingSpec) -> Generation:
    heads, one, n = spec.tap, spec.replace(n=1), spec.n
    with (
        tap_files(n if heads else 0) as tap_paths,
        tap_files(n if spec.confidence is not None else 0) as confidence_paths,
    ):
        channels = [
            Channels(
                TapSpec(heads=heads, file=tap_paths[i]) if heads else None,
                confidence_paths[i] if confidence_paths else None,
            )
            for i in range(n)
        ]
        generations = await gather_calls(
            call(one.replace(seed=_seed(spec, i)), channels[i]) for i in range(n)
        )
        completions = []
        for i, (generation, channel) in enumerate(zip(generations, channels, strict=True)):
            completion = generation.completions[0]
            completion.index = i
            if channel.tap is not None:  # all it reads: the prompt's state and each token's
                records = read_records(channel.tap.file, heads, len(completion.token_ids) + 1)
                completion.tap = token_scores(records, heads, completion)
            if channel.confidence is not None:
                attach_confidence(completion, read_confidence(channel.confidence, _most(spec)))
            completions.append(completion)
    first = generations[0]
    return Generation(
        prompt_token_ids=first.prompt_token_ids,
        completions=completions,
        cached_prompt_tokens=min(g.cached_prompt_tokens for g in generations),
        prompt_logprobs=first.prompt_logprobs,
    )


async def stream_channelled(stream: OneStream, spec: SamplingSpec) -> AsyncIterator[StreamEvent]:
    """One sample (``n`` 1), streamed with its channels: with a tap, each delta carries the scores
    written since the previous one (those of the tokens it has, as the engine scores a token's
    state when it samples the next; the last token's state is not scored, see the module
    docstring); with confidence, the last delta carries every record (and a confidence stop)."""
    heads = spec.tap
    with (
        tap_files(1 if heads else 0) as tap_paths,
        tap_files(1 if spec.confidence is not None else 0) as confidence_paths,
    ):
        tap = TapSpec(heads=heads, file=tap_paths[0]) if heads else None
        channel = Channels(tap, confidence_paths[0] if confidence_paths else None)
        reader = RecordReader(tap.file, heads, spec.max_tokens + 1) if tap is not None else None
        async for event in stream(spec, channel):
            for delta in event.deltas:
                if reader is not None:
                    delta.tap = reader.new_scores()
                if channel.confidence is not None and delta.finish_reason is not None:
                    records = read_confidence(channel.confidence, _most(spec))
                    delta.confidence = records
                    if records.cut is not None:
                        delta.stop_reason = CONFIDENCE_STOP
            yield event


def _most(spec: SamplingSpec) -> int:
    """The confidence records a sample of ``spec`` can have: one per token and the sentinel's."""
    return spec.max_tokens + 1


def attach_confidence(completion: Completion, records: ConfidenceRecords) -> None:
    """Give ``completion`` its records; a sample the engine ended says so in its stop reason
    (its sentinel token is already dropped: the engine's sentinel is a stop token)."""
    completion.confidence = records
    if records.cut is not None:
        completion.stop_reason = CONFIDENCE_STOP


async def gather_calls(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Run the calls at once (the engine batches them); if one fails the others are cancelled
    (their requests aborted) and its error is raised as a single call would raise it."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_awaited(c)) for c in calls]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [t.result() for t in tasks]


async def _awaited(call: Awaitable[T]) -> T:
    return await call


def _seed(spec: SamplingSpec, index: int) -> int | None:
    return None if spec.seed is None else spec.seed + index


def token_scores(
    records: list[list[float] | None], heads: tuple[str, ...], completion: Completion
) -> TapScores:
    """Per head, the score of the state of the prompt's last token, then of each output token."""
    scores: TapScores = {head: [None] * (len(completion.token_ids) + 1) for head in heads}
    for k, record in enumerate(records[: len(completion.token_ids) + 1]):
        if record is not None:
            for head, value in zip(heads, record, strict=True):
                scores[head][k] = value
    return scores

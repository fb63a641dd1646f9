"""A tapped engine call (``SamplingSpec.tap``): the N samples, each scored by probe heads on the
policy's own final hidden states while vLLM generated it (:mod:`.processors.tap`).

vLLM runs ``n > 1`` as ``n`` child requests that share one ``SamplingParams``, so a processor
cannot tell the children apart; a tapped call sends the ``n`` requests itself (child ``i`` seeded
``seed + i``, as vLLM seeds its children), each with its own tap file. The prompt is prefilled
once and shared through the prefix cache either way.

The engine never computes the state of a candidate's last token (nothing is sampled after it).
A reward that reads it (a candidate that ran out of tokens with its answer at the very end) finds
no score there and has the engine compute it when, and only when, it reads it
(:mod:`winnow.rewards.engine_prefill`: a one-token prefill, counted as reward tokens), rather
than every ``length``-finished candidate paying a one-token continuation, read or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

from winnow.engine.base import Completion, Generation, SamplingSpec, StreamEvent, TapScores
from winnow.engine.processors.specs import TapSpec
from winnow.engine.tap_files import RecordReader, read_records, tap_files

OneCall = Callable[[SamplingSpec, TapSpec], Awaitable[Generation]]
"""The local engine's single vLLM request with a tap (``VllmEngine._generate``)."""
OneStream = Callable[[SamplingSpec, TapSpec], AsyncIterator[StreamEvent]]
T = TypeVar("T")


async def generate_tapped(call: OneCall, spec: SamplingSpec) -> Generation:
    heads, one = spec.tap, spec.replace(n=1)
    with tap_files(spec.n) as files:
        generations = await gather_calls(
            call(one.replace(seed=_seed(spec, i)), TapSpec(heads=heads, file=file))
            for i, file in enumerate(files)
        )
        completions = []
        for i, (generation, file) in enumerate(zip(generations, files, strict=True)):
            completion = generation.completions[0]
            completion.index = i
            records = read_records(file, heads, len(completion.token_ids) + 1)  # all it reads
            completion.tap = token_scores(records, heads, completion)
            completions.append(completion)
    first = generations[0]
    return Generation(
        prompt_token_ids=first.prompt_token_ids,
        completions=completions,
        cached_prompt_tokens=min(g.cached_prompt_tokens for g in generations),
        prompt_logprobs=first.prompt_logprobs,
    )


async def stream_tapped(stream: OneStream, spec: SamplingSpec) -> AsyncIterator[StreamEvent]:
    """One tapped sample, streamed: each delta carries the scores written since the previous
    one (those of the tokens it has, as the engine scores a token's state when it samples the
    next). The last token's state is not scored (see the module docstring)."""
    with tap_files(1) as (file,):
        reader = RecordReader(file, spec.tap, spec.max_tokens + 1)
        async for event in stream(spec, TapSpec(heads=spec.tap, file=file)):
            for delta in event.deltas:
                delta.tap = reader.new_scores()
            yield event


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

"""A probe's scores computed by the engine instead of the reward's own backbone.

When the reward tap scored a generated response but the tokens a probe would encode differ from
the engine's before the position it reads (an answer after an EOS the detokenized text dropped,
a partial step with an appended delimiter), the probe must score the text's own tokens. The
engine that tapped the response can do that too: each position is the last prompt token of a
one-token engine call whose tap reads that token's state (the prefix cache serves the shared
prompt and every token before the first difference). The engine batches these prefills with
its decoding, where the reward's own forward pass in the server process would compete with it
for the same cores. The score is the same function of the same tokens (fp32 engine vs fp32
backbone: equal within 1e-4, ``tests/engine/test_reward_tap.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from winnow.engine.base import Engine, SamplingSpec
from winnow.engine.tapped import gather_calls
from winnow.rewards.backbone import ProbeJob

log = logging.getLogger("winnow.rewards.engine_prefill")


async def prefill_scores(
    engine: Engine, head: str, job: ProbeJob
) -> tuple[list[float], int, int] | None:
    """The head's score at each of ``job``'s positions, with (tokens computed, tokens the
    prefix cache served); None if the engine left a position unscored (its inverse not built
    yet, a failed tap): the caller encodes that job itself."""
    specs = [
        SamplingSpec(prompt=job.ids[: p + 1], max_tokens=1, temperature=0.0, tap=(head,))
        for p in job.positions
    ]
    generations = await gather_calls(engine.generate(s) for s in specs)
    scores: list[float] = []
    computed = cached = 0
    for spec, generation in zip(specs, generations, strict=True):
        values = (generation.completions[0].tap or {}).get(head)
        if not values or values[0] is None:
            return None
        scores.append(float(values[0]))
        prompt = len(spec.prompt)
        computed += prompt - generation.cached_prompt_tokens
        cached += generation.cached_prompt_tokens
    return scores, computed, cached


async def prefill_all(
    engine: Engine, head: str, jobs: Sequence[ProbeJob]
) -> list[tuple[list[float], int, int] | None]:
    """:func:`prefill_scores` of every job at once. A job whose engine calls fail is left to the
    caller to encode (None; logged once per error type), and the other jobs' calls still
    finish; cancelling this cancels (aborts) them all."""

    async def one(job: ProbeJob) -> tuple[list[float], int, int] | None:
        try:
            return await prefill_scores(engine, head, job)
        except Exception as exc:  # the backbone can still score it
            key = type(exc).__name__
            if key not in _logged:
                _logged.add(key)
                log.warning("engine prefill failed (%s: %s); encoding instead", key, exc)
            return None

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(job)) for job in jobs]
    return [t.result() for t in tasks]


_logged: set[str] = set()

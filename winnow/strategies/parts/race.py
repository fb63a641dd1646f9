"""Samples that run at once and are read as each one finishes: the rest are cancelled as soon
as the answer is settled.

One engine call of ``n`` samples ends when its longest sample ends. Here each sample is its own
streamed call (sample ``i`` seeded ``seed + i``, as vLLM seeds the children of one call, and the
prompt shared through the prefix cache), so a short answer is read while longer ones are still
being written, and once ``settle`` says the answer is settled, the samples still running are
cancelled: their engine requests are aborted (their KV blocks freed) and the tokens they wrote
are counted, as every token a strategy makes is (the streams are metered as they go).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from winnow.engine.base import Completion, SamplingSpec
from winnow.metering.engine import MeteredEngine
from winnow.strategies.parts.written import Written

Settle = Callable[[Completion, list[int]], Awaitable[bool]]
"""Called with each finished sample (and the prompt's token ids) in finishing order; True: the
answer is settled, cancel the rest."""


async def streamed(
    engine: MeteredEngine, spec: SamplingSpec, index: int
) -> tuple[Completion, list[int]]:
    """One sample (``spec.n`` 1) streamed and put back together, with the prompt's token ids."""
    written = Written(index)
    prompt: list[int] = []
    async with contextlib.aclosing(engine.stream(spec)) as events:
        async for event in events:
            prompt = event.prompt_token_ids or prompt
            for delta in event.deltas:
                written.add(delta)
    return written.completion(), prompt


async def race(
    engine: MeteredEngine, spec: SamplingSpec, count: int, first: int, settle: Settle
) -> tuple[list[Completion], int]:
    """``count`` samples of ``spec`` at once (indexed, and seeded, from ``first``: the samples
    one call of ``n`` would draw); each finished one goes to ``settle``. Returns the finished
    samples in finishing order and how many were cancelled."""
    one = spec.replace(n=1)
    seeds = [None if spec.seed is None else spec.seed + i for i in range(count)]
    tasks = [
        asyncio.create_task(streamed(engine, one.replace(seed=seed), first + i))
        for i, seed in enumerate(seeds)
    ]
    finished: list[Completion] = []
    pending = set(tasks)
    try:
        settled = False
        while pending and not settled:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=tasks.index):  # in index order within a batch
                completion, prompt = task.result()
                finished.append(completion)
                settled = await settle(completion, prompt) or settled
        return finished, len(pending)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

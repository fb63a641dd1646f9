"""Plain sampling: the engine's own n samples, streamed token by token when asked."""

from __future__ import annotations

from typing import Any

from winnow.engine.base import SamplingSpec
from winnow.metering.engine import MeteredEngine
from winnow.strategies.base import (
    Choice,
    ChoiceDelta,
    GenerationRequest,
    Rewards,
    StrategyParams,
    StrategyResult,
)
from winnow.strategies.registry import register


class SampleParams(StrategyParams):
    """Plain sampling takes no parameters beyond the OpenAI ones."""


@register("sample", SampleParams, streams=True)
async def sample(
    request: GenerationRequest, engine: MeteredEngine, rewards: Rewards
) -> StrategyResult:
    """Sample n completions, as a plain OpenAI-compatible server would."""
    return await sample_spec(request, engine, request.spec)


async def sample_spec(
    request: GenerationRequest, engine: MeteredEngine, spec: SamplingSpec, **details: Any
) -> StrategyResult:
    """One engine call's n samples as the choices; streamed token by token to ``request.sink``
    when there is one (strategies that only change the engine call, like vas, reuse this)."""
    if request.sink is None:
        generation = await engine.generate(spec)
        choices = [
            Choice(c.index, c.text, c.token_ids, c.finish_reason, c.logprobs)
            for c in generation.completions
        ]
        return StrategyResult(choices, details=details)

    texts: dict[int, list[str]] = {i: [] for i in range(request.spec.n)}
    token_ids: dict[int, list[int]] = {i: [] for i in range(request.spec.n)}
    finish: dict[int, str | None] = dict.fromkeys(range(request.spec.n))
    async for event in engine.stream(spec):
        deltas = []
        for d in event.deltas:
            texts[d.index].append(d.text)
            token_ids[d.index].extend(d.token_ids)
            if d.finish_reason is not None:
                finish[d.index] = d.finish_reason
            deltas.append(ChoiceDelta(d.index, d.text, d.token_ids, d.finish_reason, d.logprobs))
        if deltas:
            await request.sink.send(deltas)
    choices = [
        Choice(i, "".join(texts[i]), token_ids[i], finish[i])  # type: ignore[arg-type]
        for i in range(request.spec.n)
    ]
    return StrategyResult(choices, details=details, streamed=True)

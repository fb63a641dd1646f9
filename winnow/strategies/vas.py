"""VAS: value-augmented sampling (Han et al., 2024), token by token inside the engine.

At every token the policy's top-k candidates get ``beta_i * (Q_i - mean Q_i)`` added to their
logits for each requested value model ``i``, and the engine samples as usual: the answer is drawn
from ``pi_ref * exp(sum_i beta_i Q_i)`` restricted to the top-k. The adjustment runs in vLLM's
sampler (:mod:`winnow.engine.processors.vas`), batched over every VAS request of the step, so a
VAS request costs one engine call, streams like plain sampling, and shares the prefix cache.

``values`` composes several value models per request (one per reward), each with its own beta:
``{"default": 3.0, "brevity": 1.0}``. Q is in units of each reward's standard deviation on the
policy's samples, so the betas are comparable. With temperature T the effective beta is beta / T
(the adjustment is applied before temperature, as in the paper at T = 1).
"""

from __future__ import annotations

import math

from pydantic import Field, field_validator

from winnow.engine.processors.specs import VAS_MAX_TOP_K, VasSpec
from winnow.heads.value import available, read_meta
from winnow.metering.engine import MeteredEngine
from winnow.strategies.base import GenerationRequest, Rewards, StrategyParams, StrategyResult
from winnow.strategies.registry import StrategyError, register
from winnow.strategies.sample import sample_spec


class VasParams(StrategyParams):
    values: dict[str, float] = Field(
        default_factory=lambda: {"default": 3.0},
        description="Value models by name with their beta; several compose additively. "
        f"Shipped: {', '.join(available()) or 'none'}.",
    )
    top_k: int = Field(20, ge=1, le=VAS_MAX_TOP_K, description="Candidates adjusted per token.")

    @field_validator("values")
    @classmethod
    def _finite(cls, values: dict[str, float]) -> dict[str, float]:
        if not values:
            raise ValueError("name at least one value model")
        for name, beta in values.items():
            if not math.isfinite(beta):
                raise ValueError(f"beta of {name!r} must be finite")
        return values

    def check(self, request: GenerationRequest) -> None:
        known = available()
        for name in self.values:
            if name not in known:
                raise StrategyError(
                    f"unknown value model {name!r}; available: {', '.join(known) or 'none'}",
                    "strategy.values",
                )


def value_guide(params: VasParams, vocab_size: int) -> VasSpec:
    """The processor's request: value model paths (resolved here) and betas."""
    known = available()
    values: dict[str, float] = {}
    for name, beta in params.values.items():
        meta = read_meta(known[name])
        if vocab_size and int(meta.get("vocab_size", vocab_size)) != vocab_size:
            raise StrategyError(
                f"value model {name!r} was trained for a vocabulary of {meta['vocab_size']} "
                f"tokens; the served model has {vocab_size}",
                "strategy.values",
            )
        values[str(known[name])] = float(beta)
    return VasSpec(values=values, top_k=params.top_k)


@register("vas", VasParams, streams=True)
async def vas(
    request: GenerationRequest, engine: MeteredEngine, rewards: Rewards
) -> StrategyResult:
    """Value-augmented sampling: steer each token by trained value models (one engine call)."""
    params = request.params
    assert isinstance(params, VasParams)
    params.check(request)
    unavailable = engine.info.extra.get("vas_unavailable")
    if unavailable:
        raise StrategyError(f"vas cannot run on the served model: {unavailable}", "strategy")
    guide = value_guide(params, engine.info.vocab_size)
    spec = request.spec.replace(vas=guide)
    return await sample_spec(request, engine, spec, values=dict(params.values), top_k=params.top_k)

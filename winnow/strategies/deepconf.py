"""DeepConf (Fu et al., "Deep Think with Confidence"): guidance with no reward model, from the
policy's own token confidence, read inside the engine.

A preset of :mod:`winnow.strategies.adaptive` with DeepConf's online mode, its defaults the
setting chosen on 60 training-split questions of the default model (warm-up 4, waves of 4, tau
0.9, ``benchmarks/deepconf/offline.py``): the first wave (``wave`` traces) is the warm-up, whose
lowest group confidences set the threshold (the top ``eta`` bar); every later trace is ended
inside the engine as soon as its group confidence falls below it, and sampling stops once the
leading answer holds ``confidence`` (tau) of the confidence-weighted votes, or at ``max_n``. The
answer is the confidence-filtered, weighted vote (``selection: "confidence"``). Every setting of
``adaptive`` can be changed, a reward added (its probabilities then multiply the weights) and
``race`` turned on.
"""

from __future__ import annotations

from pydantic import Field

from winnow.metering.engine import MeteredEngine
from winnow.strategies.adaptive import AdaptiveParams, Selection, run_adaptive
from winnow.strategies.base import GenerationRequest, Rewards, StrategyResult
from winnow.strategies.parts.stopping import RuleName
from winnow.strategies.registry import register


class DeepConfParams(AdaptiveParams):
    wave: int = Field(
        4, ge=1, le=1024, description="Warm-up traces, then traces per wave (one engine call)."
    )
    confidence: float = Field(
        0.9,
        gt=0.5,
        lt=1.0,
        description="The consensus share of the confidence-weighted votes that stops (tau).",
    )
    max_n: int = Field(32, ge=1, le=1024, description="The most traces drawn in all.")
    rule: RuleName = Field("confidence", description="When to stop (see adaptive).")
    selection: Selection = Field(
        "confidence", description="How the answer is chosen (see adaptive)."
    )
    reward: str | dict[str, float] | None = Field(
        None, description="Optional: a reward whose probabilities multiply the weights."
    )


@register("deepconf", DeepConfParams)
async def deepconf(
    request: GenerationRequest, engine: MeteredEngine, rewards: Rewards
) -> StrategyResult:
    """DeepConf: the policy's own confidence, no reward needed (a preset of adaptive)."""
    params = request.params
    assert isinstance(params, DeepConfParams)
    return await run_adaptive("deepconf", request, engine, rewards, params)

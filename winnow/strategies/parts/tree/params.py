"""``tree_search``'s parameters: what a client may ask, and what it is refused before sampling."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from winnow.protocol.requests import REFERENCE_DESCRIPTION, Reference
from winnow.protocol.trace import TRACE_DESCRIPTION
from winnow.strategies.base import GenerationRequest, StrategyParams
from winnow.strategies.parts.selection import Aggregation
from winnow.strategies.registry import StrategyError


class TreeSearchParams(StrategyParams):
    n: int = Field(4, ge=1, le=1024, description="Beams (N): children sampled per round.")
    beam_width: int = Field(4, ge=1, le=1024, description="M: children per kept beam.")
    mode: Literal["beam", "dvts"] = Field("beam", description="Beam search or DVTS.")
    max_depth: int = Field(40, ge=1, le=1000, description="Rounds; the last runs to the end.")
    step_tokens: int = Field(256, ge=1, description="At most this many tokens per step.")
    delimiter: str = Field(
        "\n\n", min_length=1, max_length=64, description="Ends a step (kept in the text)."
    )
    aggregation: Aggregation = Field(
        "last",
        description="Step scores -> a beam's score: the last, the lowest, or the product of the "
        "steps' probabilities (prod; a logit-scale reward through a sigmoid).",
    )
    selection: Literal["best", "weighted_vote"] = Field(
        "best",
        description="Final pick among finished beams: best score, or weighted vote (beams' "
        "scores read as probabilities, summed per final answer).",
    )
    reward: str | dict[str, float] = Field(
        "default_prm",
        description="A process reward (or an outcome reward, scored on prefixes); name or weights.",
    )
    final_reward: str | dict[str, float] | None = Field(
        None,
        description="Re-score the finished beams with this outcome reward (name or weights) and "
        "pick by it; the search's reward still prunes. None: pick by the search's reward.",
    )
    reference: Reference | None = Field(None, description=REFERENCE_DESCRIPTION)
    temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="Sampling temperature; default: the request's."
    )
    partial_tokens: int | None = Field(
        None, ge=1, description="Early rejection: score children after this many tokens."
    )
    stop_at_answer: bool = Field(True, description="A step stating a final answer ends a beam.")
    return_candidates: bool = Field(False, description="Add every finished beam to the response.")
    trace: bool = Field(False, description=TRACE_DESCRIPTION)

    @property
    def kept(self) -> int:
        """Beams that survive a round (N/M)."""
        return max(self.n // self.beam_width, 1)

    def candidates(self) -> int:
        return self.n

    def guaranteed(self) -> int:
        """Finished beams the search always returns at least."""
        if self.mode == "beam" and self.partial_tokens is None:
            return self.n
        return self.kept

    def token_budget(self, request: GenerationRequest) -> int:
        """Upper bound: every round samples N children of at most one step each (the last round
        up to ``max_tokens``); with early rejection N partial children and N/M finished steps.
        A round adds at least one token to every beam, so there are at most ``max_tokens``."""
        total = request.spec.max_tokens
        step = min(self.step_tokens, total)
        rounds = min(self.max_depth, total)
        if self.partial_tokens is None:
            return self.n * ((rounds - 1) * step + total)
        part = min(self.partial_tokens, step)
        rejected = (self.n - self.kept) * part
        return (rounds - 1) * (rejected + self.kept * step) + rejected + self.kept * total

    def effective_temperature(self, request: GenerationRequest) -> float:
        return request.spec.temperature if self.temperature is None else self.temperature

    def check(self, request: GenerationRequest) -> None:
        if self.n % self.beam_width:
            raise StrategyError(
                f"strategy.n={self.n} must be a multiple of strategy.beam_width="
                f"{self.beam_width} (N/M beams survive each round)",
                "strategy.n",
            )
        if self.partial_tokens is not None and self.partial_tokens >= self.step_tokens:
            raise StrategyError(
                f"strategy.partial_tokens={self.partial_tokens} must be below "
                f"strategy.step_tokens={self.step_tokens}",
                "strategy.partial_tokens",
            )
        if request.spec.n > self.guaranteed():
            how = "DVTS" if self.mode == "dvts" else "early rejection"
            raise StrategyError(
                f"n={request.spec.n} choices asked, but {how} with strategy.n={self.n}, "
                f"beam_width={self.beam_width} may finish only {self.guaranteed()} beams",
                "n",
            )
        if self.n > 1 and self.effective_temperature(request) == 0:
            raise StrategyError(
                "tree search samples several children per step: temperature must be > 0",
                "temperature",
            )

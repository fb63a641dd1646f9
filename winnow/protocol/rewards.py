"""``/v1/rewards``: scoring requests and their answers, and the configured rewards' cards."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from winnow.protocol.requests import REFERENCE_DESCRIPTION, ChatMessageIn, Reference

RewardName = Annotated[str, Field(min_length=1)]
RewardWeights = Annotated[dict[str, float], Field(min_length=1)]


class RewardItemIn(BaseModel):
    """One thing to score: a prompt (raw text, or chat messages rendered with the model's
    template) and either a ``response`` (outcome) or ``steps`` (process)."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | None = Field(None, max_length=200_000)
    messages: list[ChatMessageIn] | None = Field(None, max_length=1024)
    response: str | None = Field(None, max_length=200_000)
    steps: list[str] | None = Field(None, max_length=512)
    partial: StrictBool = Field(
        False, description="The last step is unfinished; score it as complete."
    )
    reference: Reference | None = Field(None, description=REFERENCE_DESCRIPTION)


class RewardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reward: RewardName | RewardWeights = Field(
        description="A configured reward name, or weights over configured rewards."
    )
    items: list[RewardItemIn] = Field(min_length=1, max_length=256)


class RewardDomain(BaseModel):
    """Whether the item's prompt is in the domain the reward was trained on (a probe reward
    with a domain head: ``winnow train fit``)."""

    distance: float = Field(description="The prompt state's distance from the training ones'.")
    threshold: float = Field(description="The largest distance in the domain (calibrated).")
    in_domain: bool


class RewardScore(BaseModel):
    index: int
    score: float | None = Field(None, description="Outcome score (process: the last step's).")
    step_scores: list[float] | None = None
    domain: RewardDomain | None = Field(
        None, description="The prompt's distance from the reward's domain, where it knows one."
    )


class RewardUsage(BaseModel):
    reward_calls: int
    reward_tokens: int
    reward_cached_tokens: int = 0


class RewardResponse(BaseModel):
    object: Literal["list"] = "list"
    reward: str
    kind: str
    data: list[RewardScore]
    usage: RewardUsage


class RewardCard(BaseModel):
    name: str
    kind: str
    backend: str
    scale: str
    description: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)


class RewardList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RewardCard]

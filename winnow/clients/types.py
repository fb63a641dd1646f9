"""Typed request and response models of the client.

Responses are the wire models the server answers with (:mod:`winnow.protocol`, pydantic only,
no server imports), so the client and the server cannot drift apart. Unknown response fields are
ignored, which keeps the models usable against a plain vLLM OpenAI server too.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from winnow.protocol.responses import (
    ChatCompletionChunk,
    ChatCompletionResponse,
    CompletionResponse,
    ModelCard,
    ModelList,
    Usage,
    WinnowInfo,
    WinnowUsage,
)

__all__ = [
    "ChatCompletionChunk",
    "ChatCompletionResponse",
    "CompletionChunk",
    "CompletionResponse",
    "ModelCard",
    "ModelList",
    "Strategy",
    "StrategyInfo",
    "StrategyLike",
    "Usage",
    "WinnowInfo",
    "WinnowUsage",
]


class CompletionChunk(CompletionResponse):
    """One streamed `/v1/completions` event: OpenAI reuses the completion object for chunks.

    The last chunk of a stream asked with ``stream_options.include_usage`` has no choices and
    carries ``usage`` (with ``usage.winnow`` on winnow).
    """


class Strategy(BaseModel):
    """A request's ``strategy``: a name and that strategy's free parameters.

    Kept open on purpose (strategies come and go): any parameter is accepted here and the server
    validates it. On the wire the parameters sit beside ``name``, as the server expects::

        Strategy(name="best_of_n", params={"n": 8, "reward": "default"})
        Strategy.model_validate({"name": "best_of_n", "n": 8})   # same thing
        Strategy.model_validate("sample")
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="A name listed by GET /v1/strategies.")
    params: dict[str, Any] = Field(default_factory=dict, description="That strategy's parameters.")

    @model_validator(mode="before")
    @classmethod
    def _fold_flat_fields(cls, data: Any) -> Any:
        """Accept a bare name, or the flat wire form with parameters beside ``name``."""
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, dict):
            flat = {k: v for k, v in data.items() if k not in ("name", "params")}
            if flat:
                return {"name": data.get("name"), "params": {**data.get("params", {}), **flat}}
        return data

    def wire(self) -> dict[str, Any]:
        """The JSON object the server takes: ``{"name": ..., **params}``."""
        return {"name": self.name, **self.params}


StrategyLike = Strategy | str | dict[str, Any]
"""What the client accepts for ``strategy``: a :class:`Strategy`, a name, or a wire dict."""


def strategy_wire(strategy: StrategyLike) -> dict[str, Any]:
    """Validate any accepted strategy form and return its wire object."""
    if isinstance(strategy, Strategy):
        return strategy.wire()
    return Strategy.model_validate(strategy).wire()


class StrategyInfo(BaseModel):
    """One entry of ``GET /v1/strategies``."""

    name: str
    description: str = ""
    streams_tokens: bool = False
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="The strategy's parameters as JSON Schema."
    )

"""What clients send: OpenAI's completion and chat request bodies, OpenAI's fields first, then
winnow's own, each with a description.

Unknown top-level fields are accepted and logged (SDKs send fields we do not use); fields that
would change the answer and that winnow cannot honour are refused with a 400 instead.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_N = 128  # hard ceiling; the configurable cap in settings is usually lower
MAX_STOP = 16


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    continuous_usage_stats: bool = False


StrategyField = str | dict[str, Any] | None
STRATEGY_DESCRIPTION = (
    'How the answer is searched for: a strategy name ("best_of_n") or an object with "name" and '
    'that strategy\'s parameters ({"name": "best_of_n", "n": 8, "reward": "default"}). '
    'Absent means plain sampling ("sample"). GET /v1/strategies lists names and parameters.'
)


class SamplingFields(BaseModel):
    """Fields shared by completions and chat completions."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, description="Served model name; optional with one model.")
    n: int = Field(1, ge=1, le=MAX_N, description="How many choices to return.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: str | list[str] | None = Field(None, description="Up to 16 stop strings.")
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = Field(None, description="Not supported; must be empty.")
    user: str | None = Field(None, max_length=256)
    # winnow's own fields (vLLM's names where vLLM has them)
    strategy: StrategyField = Field(None, description=STRATEGY_DESCRIPTION)
    top_k: int | None = Field(None, ge=-1, description="vLLM extension; -1 or 0 disables.")
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="vLLM extension.")
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0, description="vLLM extension.")
    stop_token_ids: list[int] | None = Field(None, max_length=64, description="vLLM extension.")
    ignore_eos: bool = Field(False, description="vLLM extension: keep going past EOS.")

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        return stops

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            raise ValueError("logit_bias is not supported")
        return value

    def stop_list(self) -> list[str]:
        return list(self.stop or [])  # type: ignore[arg-type]


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="A prompt, a list of prompts, token ids, or a list of token-id lists."
    )
    max_tokens: int | None = Field(16, ge=1, description="Default 16, as in OpenAI's API.")
    logprobs: int | None = Field(None, ge=0, le=20, description="Top-k logprobs per token.")
    echo: bool = Field(False, description="Prepend the prompt to each choice's text.")
    suffix: str | None = Field(None, description="Not supported; must be absent.")
    best_of: int | None = Field(None, description="Removed upstream; use a strategy instead.")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be empty")
        if isinstance(value, list) and len(value) > 64 and isinstance(value[0], str | list):
            raise ValueError("at most 64 prompts per request")
        if isinstance(value, list) and isinstance(value[0], list) and any(not p for p in value):
            raise ValueError("token-id prompts must not be empty")
        return value

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("suffix is not supported")
        return value

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, value: int | None) -> int | None:
        if value is not None and value > 1:
            raise ValueError(
                'best_of is not supported; use "strategy": {"name": "best_of_n", "n": N}'
            )
        return value


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=1024)
    max_tokens: int | None = Field(None, ge=1, description="Default: the rest of the context.")
    max_completion_tokens: int | None = Field(None, ge=1, description="Same as max_tokens.")
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = Field(None, description="Only type text.")
    tools: list[dict[str, Any]] | None = Field(None, description="Not supported; must be absent.")
    add_generation_prompt: bool = Field(True, description="vLLM extension.")

    @field_validator("response_format")
    @classmethod
    def _format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value and value.get("type", "text") != "text":
            raise ValueError("only response_format type 'text' is supported")
        return value

    @field_validator("tools")
    @classmethod
    def _tools(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if value:
            raise ValueError("tools are not supported")
        return value

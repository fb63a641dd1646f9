"""OpenAI wire models: OpenAI's fields first, then winnow's own, each with a description.

Unknown top-level fields are accepted and logged (SDKs send fields we do not use); fields that
would change the answer and that winnow cannot honour are refused with a 400 instead.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from winnow.strategies.trace import Trace

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


# ---- responses -------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class WinnowUsage(BaseModel):
    """What the request really cost, kept and discarded work alike."""

    strategy: str
    generated_tokens: int = Field(description="Every token the engine generated, kept or not.")
    discarded_tokens: int = Field(description="Generated tokens not in any returned choice.")
    engine_calls: int
    prefilled_tokens: int = Field(description="Prompt tokens processed, summed over calls.")
    cached_tokens: int = Field(description="Of the prefilled tokens, served by the prefix cache.")
    reward_calls: int
    reward_tokens: int = Field(description="Tokens reward models computed for this request.")
    reward_cached_tokens: int = Field(
        0, description="Tokens reward models reused from their prefix caches instead."
    )


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    winnow: WinnowUsage | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class WinnowInfo(BaseModel):
    strategy: str
    candidates: list[dict[str, Any]] | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    trace: list[Trace] | None = Field(
        None,
        description="With strategy parameter trace: true, what the search did, one per prompt "
        "(streaming: in the last chunk before usage).",
    )


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    winnow: WinnowInfo | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    winnow: WinnowInfo | None = None


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    winnow: WinnowInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "winnow"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# ---- rewards -----------------------------------------------------------------------------------


class RewardItemIn(BaseModel):
    """One thing to score: a prompt (raw text, or chat messages rendered with the model's
    template) and either a ``response`` (outcome) or ``steps`` (process)."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | None = Field(None, max_length=200_000)
    messages: list[ChatMessageIn] | None = Field(None, max_length=1024)
    response: str | None = Field(None, max_length=200_000)
    steps: list[str] | None = Field(None, max_length=512)
    partial: bool = Field(False, description="The last step is unfinished; score it as complete.")
    reference: str | None = Field(None, description="Gold answer, for verifier rewards.")


class RewardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reward: str | dict[str, float] = Field(
        description="A configured reward name, or weights over configured rewards."
    )
    items: list[RewardItemIn] = Field(min_length=1, max_length=256)


class RewardScore(BaseModel):
    index: int
    score: float | None = Field(None, description="Outcome score (process: the last step's).")
    step_scores: list[float] | None = None


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

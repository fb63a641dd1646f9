"""What the server answers: OpenAI's completion and chat responses, their stream chunks, the
model list and the error body, with winnow's ``usage.winnow`` and ``winnow`` beside OpenAI's."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field

from winnow.protocol.trace import Trace


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
    reward_tapped: int = Field(
        0,
        description="Scores read from the policy's own hidden states, computed by the engine "
        "while it generated (the reward tap): no reward forward pass, no reward tokens.",
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

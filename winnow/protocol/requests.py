"""What clients send: OpenAI's completion and chat request bodies, OpenAI's fields first, then
winnow's own, each with a description.

Unknown top-level fields are accepted and logged (SDKs send fields we do not use); fields that
would change the answer and that winnow cannot honour are refused with a 400 instead.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

MAX_N = 128  # hard ceiling; the configurable cap in settings is usually lower
MAX_STOP = 16
MAX_STOP_CHARS = 256  # per stop string
MAX_PROMPTS = 64  # prompts per completions request
MAX_REFERENCE_CHARS = 4096  # a gold answer (strategy.reference, a reward item's reference)

# Booleans are strict (0, "true" or "yes" are not booleans) and token ids are strict integers
# (false is not token 0): the schema says boolean / integer, and the server refuses the rest.
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
PromptText = Annotated[str, Field(min_length=1)]
TokenIds = Annotated[list[StrictInt], Field(min_length=1)]
Reference = Annotated[str, Field(max_length=MAX_REFERENCE_CHARS)]
REFERENCE_DESCRIPTION = (
    f"Gold answer, for the verifier reward (at most {MAX_REFERENCE_CHARS} characters)."
)


class StreamOptions(BaseModel):
    # ignore, not forbid: the SDK sends options winnow has no use for (include_obfuscation)
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False
    continuous_usage_stats: StrictBool = False


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
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP)] | None = Field(
        None, description=f"Up to {MAX_STOP} stop strings of at most {MAX_STOP_CHARS} characters."
    )
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = Field(
        None, max_length=0, description="Not supported: absent, null or empty."
    )
    user: str | None = Field(None, max_length=256)
    # winnow's own fields (vLLM's names where vLLM has them)
    strategy: StrategyField = Field(None, description=STRATEGY_DESCRIPTION)
    top_k: int | None = Field(None, ge=-1, description="vLLM extension; -1 or 0 disables.")
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="vLLM extension.")
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0, description="vLLM extension.")
    stop_token_ids: list[StrictInt] | None = Field(
        None, max_length=64, description="vLLM extension."
    )
    ignore_eos: StrictBool = Field(False, description="vLLM extension: keep going past EOS.")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_bounds(cls, value: Any) -> Any:
        """The bounds the schema states, said plainly (a union's errors name every branch)."""
        stops = [value] if isinstance(value, str) else value
        if not isinstance(stops, list):
            return value  # None, or the wrong type: the type check says so
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        for stop in stops:
            if isinstance(stop, str) and not stop:
                raise ValueError("stop strings must not be empty")
            if isinstance(stop, str) and len(stop) > MAX_STOP_CHARS:
                raise ValueError(f"a stop string has at most {MAX_STOP_CHARS} characters")
        return value

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return [value] if isinstance(value, str) else value

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _logit_bias(cls, value: Any) -> Any:
        if isinstance(value, dict) and value:
            raise ValueError("logit_bias is not supported")
        return value

    def stop_list(self) -> list[str]:
        return list(self.stop or [])  # type: ignore[arg-type]


class CompletionRequest(SamplingFields):
    prompt: (
        PromptText
        | Annotated[list[PromptText], Field(min_length=1, max_length=MAX_PROMPTS)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]
    ) = Field(
        description=f"A prompt, a list of prompts, token ids, or a list of token-id lists (at "
        f"most {MAX_PROMPTS} prompts; none empty)."
    )
    max_tokens: int | None = Field(16, ge=1, description="Default 16, as in OpenAI's API.")
    logprobs: int | None = Field(None, ge=0, le=20, description="Top-k logprobs per token.")
    echo: StrictBool = Field(False, description="Prepend the prompt to each choice's text.")
    suffix: str | None = Field(None, max_length=0, description="Not supported; must be absent.")
    best_of: int | None = Field(None, le=1, description="Removed upstream; use a strategy instead.")

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        """The bounds the schema states, said plainly (a union's errors name every branch)."""
        if value == "" or value == []:
            raise ValueError("prompt must not be empty")
        if not isinstance(value, list):
            return value
        if len(value) > MAX_PROMPTS and isinstance(value[0], str | list):
            raise ValueError(f"at most {MAX_PROMPTS} prompts per request")
        if isinstance(value[0], str | list) and any(p == "" or p == [] for p in value):
            raise ValueError("prompts must not be empty")
        return value

    @field_validator("suffix", mode="before")
    @classmethod
    def _suffix(cls, value: Any) -> Any:
        if isinstance(value, str) and value:
            raise ValueError("suffix is not supported")
        return value

    @field_validator("best_of", mode="before")
    @classmethod
    def _best_of(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
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
    logprobs: StrictBool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = Field(None, description="Only type text.")
    tools: list[dict[str, Any]] | None = Field(
        None, max_length=0, description="Not supported: absent, null or empty."
    )
    add_generation_prompt: StrictBool = Field(True, description="vLLM extension.")

    @field_validator("response_format")
    @classmethod
    def _format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value and value.get("type", "text") != "text":
            raise ValueError("only response_format type 'text' is supported")
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, value: Any) -> Any:
        if isinstance(value, list) and value:
            raise ValueError("tools are not supported")
        return value

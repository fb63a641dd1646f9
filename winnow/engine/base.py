"""The generator seam: what every strategy may ask of a language-model engine.

Three implementations sit behind it: the shared in-process vLLM ``AsyncLLM``
(:mod:`winnow.engine.vllm_local`), one or more remote OpenAI-compatible vLLM servers
(:mod:`winnow.engine.remote.backend`) and a scripted fake for unit tests
(:mod:`winnow.engine.fake`).

The seam is shaped by what the six strategies need:

* sample ``n`` continuations of a prompt given as text or token ids (best-of-N, majority);
* continue a partial answer and stop at a step delimiter, keeping it (tree search, CARDS);
* per-token top-k logprobs (VAS, answer confidence) and prompt logprobs (judges);
* engine-side per-request arguments for logits processors (CARDS segmentation, VAS);
* discard candidates early: every call can be cancelled, which aborts its engine work.

Cancellation is the abort path: cancelling the task that awaits :meth:`Engine.generate` (or
closing the iterator of :meth:`Engine.stream`) aborts the request inside the engine, so a
rejected candidate or a disconnected client frees its KV blocks at once.
"""

from __future__ import annotations

import abc
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from winnow.engine.confidence import ConfidenceRecords
from winnow.engine.processors.specs import ConfidenceSpec, SegmentSpec, VasSpec

FinishReason = Literal["stop", "length", "abort"]


SEGMENT_STOP = "segment"
CONFIDENCE_STOP = "confidence"
"""``stop_reason`` of a completion the confidence processor ended (``SamplingSpec.confidence``
with a threshold): its group confidence fell below the threshold there."""


class SamplingSpec(BaseModel):
    """One engine call: sample ``n`` continuations of one prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str | tuple[int, ...] = Field(description="Prompt text, or token ids (no BOS added).")
    n: int = Field(1, ge=1)
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="0 disables top-k filtering.")
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = Field(
        False, description="Keep a matched stop string at the end of the text (step delimiters)."
    )
    ignore_eos: bool = False
    logprobs: int | None = Field(None, ge=0, le=20, description="Top-k logprobs per token.")
    prompt_logprobs: int | None = Field(None, ge=0, le=20)
    extra_args: dict[str, Any] | None = Field(
        None, description="Per-request arguments for engine-side logits processors."
    )
    segment: SegmentSpec | None = Field(None, description="Stop where the model is uncertain.")
    tap: tuple[str, ...] = Field(
        (),
        description="Probe directories to score on every generated token's final hidden state "
        "inside the engine (Completion.tap); an engine that cannot tap returns none.",
    )
    vas: VasSpec | None = Field(None, description="Steer every token by value models (VAS).")
    confidence: ConfidenceSpec | None = Field(
        None,
        description="Record every sample's token confidence inside the engine "
        "(Completion.confidence) and, with a threshold, end a sample where its group confidence "
        "falls below it (stop_reason 'confidence'); an engine that cannot refuses the call.",
    )

    @model_validator(mode="after")
    def _check(self) -> SamplingSpec:
        if isinstance(self.prompt, tuple) and not self.prompt:
            raise ValueError("prompt token ids must not be empty")
        return self

    def replace(self, **changes: Any) -> SamplingSpec:
        """This call with some settings changed, validated again (a strategy's next call)."""
        return SamplingSpec.model_validate({**dict(self), **changes})

    def vllm_settings(self) -> dict[str, Any]:
        """The sampling settings that vLLM's ``SamplingParams`` and its ``/v1/completions`` both
        take under these names (tuples as lists). Left to each backend: the prompt, logprobs
        (how they are asked for differs) and winnow's own steering (``segment``, ``vas``,
        ``extra_args``).
        """
        settings = self.model_dump(exclude=_BACKEND_OWN)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


_BACKEND_OWN = {
    "prompt", "logprobs", "prompt_logprobs", "extra_args", "segment", "vas", "tap", "confidence"
}  # fmt: skip

TapScores = dict[str, list[float | None]]
"""Probe directory -> its scores of the final hidden states from the prompt's last token on
(``[0]``: the prompt's last token, ``[i + 1]``: ``token_ids[i]``); None where the engine did not
compute the state or could not read it."""


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """The sampled token with its logprob, and the top-k alternatives at that position."""

    token_id: int
    token: str
    logprob: float
    top: tuple[tuple[int, str, float], ...] = ()


@dataclass(slots=True)
class Completion:
    """One continuation of a prompt."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None
    stop_reason: str | int | None = None
    logprobs: list[TokenLogprob] | None = None
    # tokens the engine generated that are not in token_ids (a segment cut's sentinel, the
    # token sampled after a tapped length-finished candidate): work done, so usage counts them
    unseen_tokens: int = 0
    tap: TapScores | None = None  # the probe scores the engine computed (SamplingSpec.tap)
    # the token confidences the engine recorded and where it ended the sample, if it did
    # (SamplingSpec.confidence); values[k] is that of token_ids[k]'s distribution
    confidence: ConfidenceRecords | None = None


@dataclass(slots=True)
class Generation:
    """The result of one engine call: the prompt as the engine saw it and its completions."""

    prompt_token_ids: list[int]
    completions: list[Completion]
    cached_prompt_tokens: int = 0
    prompt_logprobs: list[TokenLogprob | None] | None = None

    @property
    def generated_tokens(self) -> int:
        return sum(len(c.token_ids) + c.unseen_tokens for c in self.completions)


@dataclass(slots=True)
class CompletionDelta:
    """New output of one completion since the previous delta (streaming)."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    logprobs: list[TokenLogprob] | None = None
    # a tapped stream (SamplingSpec.tap, n 1): the scores the engine wrote since the last delta,
    # continuing the completion's TapScores (the first delta's start with the prompt's state)
    tap: TapScores | None = None
    # a confidence stream (SamplingSpec.confidence, n 1): on the last delta, every record
    confidence: ConfidenceRecords | None = None
    unseen_tokens: int = 0  # generated but not in token_ids (a cut's sentinel)


@dataclass(slots=True)
class StreamEvent:
    """One step of a streamed engine call: the deltas produced since the last event."""

    prompt_token_ids: list[int]
    deltas: list[CompletionDelta]
    cached_prompt_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the server needs to know about the served model."""

    name: str
    max_model_len: int
    eos_token_ids: tuple[int, ...] = ()
    vocab_size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # the model directory whose final hidden states the engine scores with probe heads while it
    # generates (SamplingSpec.tap); None: this engine cannot
    tap_model: str | None = None


ChatMessage = dict[str, Any]


class EngineError(RuntimeError):
    """The engine failed to serve a call (dead engine, remote error)."""


class EngineUnavailable(EngineError):
    """The engine is not able to take work at all (not started, dead, or shutting down)."""


class EngineRequestError(EngineError):
    """The engine refused the call's parameters (a client error, not an engine failure)."""


class Engine(abc.ABC):
    """The generator seam. Implementations must be safe to share across concurrent requests."""

    blocking_text_ops: bool = False
    """Whether ``tokenize``/``detokenize``/``apply_chat_template`` are synchronous CPU work
    inside ``async def`` (the server then runs them off its event loop)."""

    @property
    @abc.abstractmethod
    def info(self) -> ModelInfo: ...

    @abc.abstractmethod
    async def generate(self, spec: SamplingSpec) -> Generation:
        """Sample ``spec.n`` completions; cancelling the awaiting task aborts the engine work."""

    @abc.abstractmethod
    def stream(self, spec: SamplingSpec) -> AsyncIterator[StreamEvent]:
        """Sample with incremental output; closing the iterator early aborts the engine work."""

    @abc.abstractmethod
    async def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]: ...

    @abc.abstractmethod
    async def detokenize(self, token_ids: Sequence[int]) -> str: ...

    @abc.abstractmethod
    async def apply_chat_template(
        self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True
    ) -> str:
        """Render chat messages into the prompt text the model expects."""

    @abc.abstractmethod
    async def check_health(self) -> None:
        """Raise :class:`EngineUnavailable` if the engine cannot serve."""

    async def running_requests(self) -> int:
        """Engine requests currently in flight (for /metrics and leak checks)."""
        return 0

    def allow_dirs(self, dirs: Iterable[str | os.PathLike[str]]) -> None:  # noqa: B027
        """Let the engine's processors read these directories (probe heads of the configured
        rewards, value models), and only the ones allowed so: call before :meth:`start`. An
        engine without processors that read directories ignores it."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Bring the engine up (load weights, connect)."""

    async def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release the engine's processes and connections."""

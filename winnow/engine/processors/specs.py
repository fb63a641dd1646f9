"""What a request asks of each engine-side logits processor: one typed spec per processor, and
the key that carries it.

A processor reads its request from ``SamplingParams.extra_args[key]`` (plain JSON: vLLM pickles
it into the engine core). Each spec owns its key and writes its own arguments: ``extra_args``
for the local engine, ``xargs`` for a remote worker (the same object as a JSON string under the
same key: vLLM's ``vllm_xargs`` carries no nesting). The processor (:mod:`.segment`, :mod:`.vas`)
reads either form back (:func:`.args.request_args`) and checks it when the request arrives.
Nothing here imports vLLM or torch: strategies and the engine seam import it.

A remote backend learns which processors a worker runs by asking each by name
(:data:`PROBE_KEY`, :func:`probe_answer`): see :mod:`.args`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SEGMENT_KEY = "winnow_segment"
VAS_KEY = "winnow_vas"
TAP_KEY = "winnow_tap"
CONFIDENCE_KEY = "winnow_confidence"
PROBE_KEY = "winnow_probe"
VAS_MAX_TOP_K = 100
CONFIDENCE_MAX_TOP_K = 100
CONFIDENCE_MAX_WINDOW = 4096
"""The longest confidence window (DeepConf's is 2048): the engine keeps each opted-in row's last
``window`` values."""

SEGMENT, VAS, TAP, CONFIDENCE = "segment", "vas", "tap", "confidence"
"""The processors' names, as the capability probe asks for them."""

SENTINEL_CANDIDATES = ("<empty_output>", "<|reserved_special_token_0|>", "<unused0>")
"""Tokens that can end an uncertainty segment, in order of preference: the first one the
tokenizer has is the sentinel (:func:`.segment.pick_sentinel`; a remote backend asks the worker's
tokenizer for the same ones in the same order)."""


def probe_answer(name: str) -> str:
    """What a worker running processor ``name`` answers (a 400) to ``{PROBE_KEY: name}``."""
    return f"winnow processor: {name}"


def as_xargs(extra_args: Mapping[str, Any]) -> dict[str, str]:
    """The same arguments for a remote vLLM's ``vllm_xargs``: each value as a JSON string."""
    return {
        key: json.dumps(value, separators=(",", ":"), sort_keys=True)
        for key, value in extra_args.items()
    }


class SegmentSpec(BaseModel):
    """End the generation before the first token whose next-token entropy (full vocabulary,
    nats) reaches ``entropy``, once at least ``min_tokens`` tokens are written (CARDS). The
    completion then finishes with ``finish_reason="stop"`` and ``stop_reason="segment"``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entropy: float = Field(3.0, gt=0.0)
    min_tokens: int = Field(4, ge=0)

    def extra_args(self, sentinel: int) -> dict[str, Any]:
        """The segmenter's arguments: the row is masked to ``sentinel`` (a stop token) to end."""
        return {SEGMENT_KEY: {**self.model_dump(), "sentinel": sentinel}}

    def xargs(self, sentinel: int) -> dict[str, str]:
        """The same for a remote worker's ``vllm_xargs`` (a JSON string under the key)."""
        return as_xargs(self.extra_args(sentinel))


class VasSpec(BaseModel):
    """Value-augmented sampling: add ``beta * (Q - mean Q)`` of each value model to the top-k
    logits at every token (:mod:`.vas`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    values: dict[str, float] = Field(description="Value model directory -> beta.")
    top_k: int = Field(20, ge=1, le=VAS_MAX_TOP_K)

    def extra_args(self) -> dict[str, Any]:
        return {VAS_KEY: {"values": dict(self.values), "top_k": self.top_k}}

    def xargs(self) -> dict[str, str]:
        """The same for a remote worker's ``vllm_xargs`` (a JSON string under the key)."""
        return as_xargs(self.extra_args())


class TapSpec(BaseModel):
    """The reward tap (:mod:`.tap`): score every generated token's final hidden state with each
    probe head in ``heads`` (probe directories) while the row is decoded, and write the scores to
    ``file`` (created by the engine seam, which reads and deletes it when the call ends)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    heads: tuple[str, ...] = Field(min_length=1)
    file: str

    def extra_args(self) -> dict[str, Any]:
        return {TAP_KEY: {"heads": list(self.heads), "file": self.file}}


TAP_RECORD_FLAG = 1.0  # first float of a written tap record; an unwritten one reads as zeros


def tap_record_size(heads: int) -> int:
    """Bytes per position in a tap file: the flag, then one float32 per head."""
    return 4 * (heads + 1)


CONFIDENCE_FIELDS = ("confidence", "cut")
"""A confidence file's record after its flag (:data:`TAP_RECORD_FLAG`): the token confidence of
the position, and 1.0 where the row was ended there (else 0.0); ``tap_record_size(2)`` bytes."""


class ConfidenceSpec(BaseModel):
    """DeepConf's token confidence inside the engine (:mod:`.confidence`): at every position of
    the row, ``C = -(1/top_k) * sum`` of the top-k log-probabilities of the raw next-token
    distribution, written to ``file`` (a file of the engine's private tap directory, created
    by the engine seam) at the position's record. With ``threshold`` set, the row is ended
    before the first position whose group confidence (the mean C of the last ``window``
    values) is below it, once the window is full and at least ``min_tokens`` tokens are
    written; None only records. ``tail`` is the statistics' tail length (tokens), not sent to
    the engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(16, ge=1, le=CONFIDENCE_MAX_WINDOW)
    top_k: int = Field(20, ge=1, le=CONFIDENCE_MAX_TOP_K)
    threshold: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    min_tokens: int = Field(0, ge=0)
    tail: int = Field(32, ge=1)

    def extra_args(self, sentinel: int | None, file: str) -> dict[str, Any]:
        """The processor's arguments: records go to ``file``; a row that must end is masked to
        ``sentinel`` (a stop token of the request; needed only with a threshold)."""
        if self.threshold is not None and sentinel is None:
            raise ValueError("a confidence threshold needs a sentinel token to end rows with")
        args: dict[str, Any] = {
            "window": self.window,
            "top_k": self.top_k,
            "threshold": self.threshold,
            "min_tokens": self.min_tokens,
            "file": file,
        }
        if sentinel is not None:
            args["sentinel"] = sentinel
        return {CONFIDENCE_KEY: args}

    def xargs(self, sentinel: int | None, file: str) -> dict[str, str]:
        """The same for a remote worker's ``vllm_xargs`` (a worker refuses it: no channel)."""
        return as_xargs(self.extra_args(sentinel, file))

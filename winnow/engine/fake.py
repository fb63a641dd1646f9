"""A scripted engine for unit tests only: deterministic, instant, obviously fake.

Tokens are characters (token id = ``ord(char)``), so lengths are easy to reason about in tests.
A *script* decides each completion's full text; the fake then applies ``max_tokens``, stop strings
and stop token ids the way vLLM does, and records every call and abort for assertions.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence

from winnow.engine.base import (
    CONFIDENCE_STOP,
    SEGMENT_STOP,
    ChatMessage,
    Completion,
    CompletionDelta,
    Engine,
    EngineRequestError,
    EngineUnavailable,
    Generation,
    ModelInfo,
    SamplingSpec,
    StreamEvent,
    TokenLogprob,
)
from winnow.engine.confidence import ConfidenceRecords, first_cut

EOS_ID = 0
UNCERTAIN = "\u00a6"
"""Scripts may mark positions where the fake model is "uncertain" with ``¦``: a call with
``SamplingSpec.segment`` stops before the first mark after ``min_tokens`` characters (as the
entropy processor does in vLLM); otherwise marks are invisible."""
DOUBT = "\u2193"
"""Scripts may mark tokens the fake model is not confident of with ``↓`` before them: with
``SamplingSpec.confidence`` each position's token confidence is :data:`LOW_CONFIDENCE` at a mark
and :data:`HIGH_CONFIDENCE` elsewhere (the one after the text too: its stop), and a threshold
ends the completion where the engine's rule would (:func:`~winnow.engine.confidence.first_cut`);
otherwise marks are invisible."""
HIGH_CONFIDENCE, LOW_CONFIDENCE = 10.0, 1.0
Script = Callable[[str, int, SamplingSpec], str]
"""(prompt text, completion index, spec) -> the completion's full text before truncation."""


def echo_script(prompt: str, index: int, spec: SamplingSpec) -> str:
    return f"answer {index} to: {prompt[-20:]}"


class FakeEngine(Engine):
    def __init__(
        self,
        script: Script = echo_script,
        *,
        delay: float = 0.0,
        token_delay: float = 0.0,
        max_model_len: int = 2048,
        name: str = "fake-model",
    ) -> None:
        self.script = script
        self.delay = delay
        self.token_delay = token_delay  # a stream's pause per token (longer answers end later)
        self.calls: list[SamplingSpec] = []
        self.aborted = 0
        self.healthy = True
        self._running = 0
        self._info = ModelInfo(name=name, max_model_len=max_model_len, eos_token_ids=(EOS_ID,))

    @property
    def info(self) -> ModelInfo:
        return self._info

    def _complete(self, prompt: str, index: int, spec: SamplingSpec) -> Completion:
        text, marks = _marked(self.script(prompt, index, spec), (UNCERTAIN, DOUBT))
        uncertain, doubts = marks[UNCERTAIN], set(marks[DOUBT])
        finish: str = "length"
        stop_reason: str | int | None = None
        cut = len(text)
        if spec.segment is not None:
            at = next((u for u in uncertain if u >= spec.segment.min_tokens), None)
            if at is not None:
                cut, finish, stop_reason = at, "stop", SEGMENT_STOP
        values: list[float | None] = [
            LOW_CONFIDENCE if k in doubts else HIGH_CONFIDENCE for k in range(len(text) + 1)
        ]
        confident = spec.confidence
        if confident is not None and confident.threshold is not None:
            at = first_cut(values, confident.window, confident.threshold, confident.min_tokens)
            if at is not None and at < cut:
                cut, finish, stop_reason = at, "stop", CONFIDENCE_STOP
        for stop in spec.stop:
            at = text.find(stop)
            if 0 <= at < cut:
                cut = at + (len(stop) if spec.include_stop_str_in_output else 0)
                finish, stop_reason = "stop", stop
        for tid in spec.stop_token_ids:
            at = text.find(chr(tid)) if 0 < tid < 0x110000 else -1  # ids are code points
            if 0 <= at < cut:
                cut, finish, stop_reason = at, "stop", tid
        eos = cut == len(text) and finish == "length"
        text = text[:cut]
        ids = [ord(c) for c in text]
        if len(ids) >= spec.max_tokens:
            ids, text, finish, stop_reason = (
                ids[: spec.max_tokens],
                text[: spec.max_tokens],
                "length",
                None,
            )
        elif eos and not spec.ignore_eos:
            ids, finish = [*ids, EOS_ID], "stop"
        logprobs = None
        if spec.logprobs is not None:
            logprobs = [
                TokenLogprob(t, chr(t) if t else "", -0.5, ((t, chr(t) if t else "", -0.5),))
                for t in ids
            ]
        unseen = 1 if stop_reason in (SEGMENT_STOP, CONFIDENCE_STOP) else 0  # vLLM's sentinel
        completion = Completion(index, text, ids, finish, stop_reason, logprobs, unseen)  # type: ignore[arg-type]
        if confident is not None:  # a record per token sampled (the sentinel's too)
            ended = stop_reason == CONFIDENCE_STOP
            completion.confidence = ConfidenceRecords(
                values[: len(ids) + unseen], len(ids) if ended else None
            )
        return completion

    async def _prompt_text(self, spec: SamplingSpec) -> str:
        if isinstance(spec.prompt, str):
            return spec.prompt
        return await self.detokenize(spec.prompt)

    async def generate(self, spec: SamplingSpec) -> Generation:
        await self.check_health()
        self.calls.append(spec)
        prompt = await self._prompt_text(spec)
        self._running += 1
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.aborted += 1
            raise
        finally:
            self._running -= 1
        completions = [self._complete(prompt, i, spec) for i in range(spec.n)]
        return Generation([ord(c) for c in prompt], completions)

    async def stream(self, spec: SamplingSpec) -> AsyncIterator[StreamEvent]:
        if spec.confidence is not None and spec.n > 1:
            raise EngineRequestError("a confidence stream samples one sequence (n=1)")
        generation = await self.generate(spec)
        self._running += 1
        finished = False
        try:
            longest = max(len(c.token_ids) for c in generation.completions)
            for step in range(longest):
                deltas = []
                for c in generation.completions:
                    if step >= len(c.token_ids):
                        continue
                    last = step == len(c.token_ids) - 1
                    tid = c.token_ids[step]
                    delta = CompletionDelta(
                        c.index,
                        c.text[step] if step < len(c.text) else "",
                        [tid],
                        c.finish_reason if last else None,
                        c.stop_reason if last else None,
                        c.logprobs[step : step + 1] if c.logprobs else None,
                    )
                    if last:
                        delta.confidence, delta.unseen_tokens = c.confidence, c.unseen_tokens
                    deltas.append(delta)
                yield StreamEvent(generation.prompt_token_ids, deltas)
                await asyncio.sleep(self.delay / max(longest, 1) + self.token_delay)
            finished = True
        finally:
            self._running -= 1
            if not finished:
                self.aborted += 1

    async def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        return "".join(chr(t) for t in token_ids if t != EOS_ID)

    async def apply_chat_template(
        self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True
    ) -> str:
        parts = [f"<{m['role']}>{m.get('content') or ''}" for m in messages]
        return "".join(parts) + ("<assistant>" if add_generation_prompt else "")

    async def check_health(self) -> None:
        if not self.healthy:
            raise EngineUnavailable("fake engine marked unhealthy")

    async def running_requests(self) -> int:
        return self._running


def _marked(text: str, marks: Sequence[str]) -> tuple[str, dict[str, list[int]]]:
    """``text`` without the marks, and where each mark was (the position of the next char)."""
    kept: list[str] = []
    positions: dict[str, list[int]] = {mark: [] for mark in marks}
    for char in text:
        if char in positions:
            positions[char].append(len(kept))
        else:
            kept.append(char)
    return "".join(kept), positions


def cycle_script(texts: Sequence[str]) -> Script:
    """A script that hands out ``texts`` in order, across calls and completions."""
    source = itertools.cycle(texts)
    return lambda prompt, index, spec: next(source)

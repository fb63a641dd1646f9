"""OpenAI's shapes of an answer: whole responses, stream chunks, logprobs and usage.

Plain functions of finished (or streaming) jobs: no engine, no HTTP. The chat and completion
endpoints differ here only in shape, so each has its response function and its :class:`Chunks`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from winnow.engine.base import TokenLogprob
from winnow.protocol.responses import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    ChatMessageOut,
    ChatTokenLogprob,
    CompletionChoice,
    CompletionLogprobs,
    CompletionResponse,
    TopLogprob,
    Usage,
    WinnowInfo,
    WinnowUsage,
    new_id,
    now,
)
from winnow.server.jobs import Job
from winnow.strategies.base import Choice, ChoiceDelta, StrategyResult

# ---- usage and winnow's own report -------------------------------------------------------------


def total_usage(jobs: Sequence[Job]) -> Usage:
    """What the whole request cost: the returned tokens, and everything generated for them."""
    prompt = sum(j.usage.prompt_tokens for j in jobs)
    completion = sum(len(c.token_ids) for j in jobs if j.result for c in j.result.choices)
    generated = sum(j.usage.generated_tokens for j in jobs)
    extension = WinnowUsage(
        strategy=jobs[0].strategy,
        generated_tokens=generated,
        discarded_tokens=max(generated - completion, 0),
        engine_calls=sum(j.usage.engine_calls for j in jobs),
        prefilled_tokens=sum(j.usage.prefilled_tokens for j in jobs),
        cached_tokens=sum(j.usage.cached_tokens for j in jobs),
        reward_calls=sum(j.usage.reward_calls for j in jobs),
        reward_tokens=sum(j.usage.reward_tokens for j in jobs),
        reward_cached_tokens=sum(j.usage.reward_cached_tokens for j in jobs),
        reward_tapped=sum(j.usage.reward_tapped for j in jobs),
    )
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        winnow=extension,
    )


def winnow_info(jobs: Sequence[Job]) -> WinnowInfo | None:
    """The response's ``winnow`` object (candidates, details, traces), or None when empty."""
    candidates: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    traces = []
    for prompt, job in enumerate(jobs):
        if job.result and job.result.trace is not None:
            job.result.trace.prompt = prompt
            traces.append(job.result.trace)
        if job.result and job.result.candidates:
            candidates.extend(job.result.candidates)
        if job.result and job.result.details:
            details = (
                job.result.details
                if len(jobs) == 1
                else {**details, str(job.index_offset): job.result.details}
            )
    if not candidates and not details and not traces:
        return None
    return WinnowInfo(
        strategy=jobs[0].strategy,
        candidates=candidates or None,
        details=details,
        trace=traces or None,
    )


# ---- logprobs in OpenAI's two shapes -----------------------------------------------------------


def completion_logprobs(
    tokens: Sequence[TokenLogprob], start_offset: int = 0
) -> CompletionLogprobs:
    out = CompletionLogprobs()
    offset = start_offset
    for t in tokens:
        out.tokens.append(t.token)
        out.token_logprobs.append(t.logprob)
        out.top_logprobs.append({tok: lp for _, tok, lp in t.top} if t.top else None)
        out.text_offset.append(offset)
        offset += len(t.token)
    return out


def chat_logprobs(tokens: Sequence[TokenLogprob]) -> ChatLogprobs:
    def entry(token: str, lp: float) -> TopLogprob:
        return TopLogprob(token=token, logprob=lp, bytes=list(token.encode()))

    content = [
        ChatTokenLogprob(
            token=t.token,
            logprob=t.logprob,
            bytes=list(t.token.encode()),
            top_logprobs=[entry(tok, lp) for _, tok, lp in t.top],
        )
        for t in tokens
    ]
    return ChatLogprobs(content=content)


# ---- whole responses ---------------------------------------------------------------------------


def completion_response(
    model: str, jobs: Sequence[Job], prefixes: Sequence[str]
) -> CompletionResponse:
    """``prefixes``: per job, the text put before each choice's (the prompt with ``echo``)."""
    choices = [
        completion_choice(job.index_offset + c.index, prefix + c.text, c)
        for job, prefix in zip(jobs, prefixes, strict=True)
        for c in _result(job).choices
    ]
    return _whole(CompletionResponse, "cmpl", model, jobs, choices)


def chat_response(model: str, jobs: Sequence[Job]) -> ChatCompletionResponse:
    (job,) = jobs
    choices = [
        ChatChoice(
            index=c.index,
            message=ChatMessageOut(content=c.text),
            logprobs=chat_logprobs(c.logprobs) if c.logprobs is not None else None,
            finish_reason=c.finish_reason,
        )
        for c in _result(job).choices
    ]
    return _whole(ChatCompletionResponse, "chatcmpl", model, jobs, choices)


def completion_choice(index: int, text: str, output: Choice | ChoiceDelta) -> CompletionChoice:
    """A completion choice (whole or a chunk's) of ``output`` at ``index`` with ``text``."""
    logprobs = completion_logprobs(output.logprobs) if output.logprobs is not None else None
    return CompletionChoice(
        index=index, text=text, logprobs=logprobs, finish_reason=output.finish_reason
    )


Whole = TypeVar("Whole", CompletionResponse, ChatCompletionResponse)


def _whole(
    shape: type[Whole], id_prefix: str, model: str, jobs: Sequence[Job], choices: Any
) -> Whole:
    return shape(
        id=new_id(id_prefix),
        created=now(),
        model=model,
        choices=choices,
        usage=total_usage(jobs),
        winnow=winnow_info(jobs),
    )


def _result(job: Job) -> StrategyResult:
    assert job.result is not None
    return job.result


# ---- stream chunks -----------------------------------------------------------------------------


class Chunks(abc.ABC):
    """The chunks of one streamed response, all under one id and creation time."""

    object: ClassVar[str]  # what each chunk says it is
    id_prefix: ClassVar[str]
    shape: ClassVar[type[CompletionResponse] | type[ChatCompletionChunk]]

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = new_id(self.id_prefix)
        self.created = now()

    def choices(self, deltas: Sequence[ChoiceDelta], fresh: set[int]) -> dict[str, Any]:
        """A chunk of new output; ``fresh``: the choice indices seen here for the first time."""
        choices = [self.choice(d, d.index in fresh) for d in deltas]
        chunk = self.shape(id=self.id, created=self.created, model=self.model, choices=choices)
        return chunk.model_dump(exclude_none=True)

    @abc.abstractmethod
    def choice(self, delta: ChoiceDelta, first: bool) -> Any:
        """One choice's new output; ``first``: its first in this stream."""

    def trace(self, info: WinnowInfo) -> dict[str, Any]:
        """The chunk with no choices that carries the traces asked for."""
        return {**self.choices([], set()), "winnow": info.model_dump()}

    def usage(self, usage: Usage) -> dict[str, Any]:
        """The last chunk with ``stream_options.include_usage``."""
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage.model_dump(),
        }


class CompletionChunks(Chunks):
    object = "text_completion"
    id_prefix = "cmpl"
    shape = CompletionResponse  # OpenAI reuses the completion object for chunks

    def choice(self, delta: ChoiceDelta, first: bool) -> CompletionChoice:
        return completion_choice(delta.index, delta.text, delta)


class ChatChunks(Chunks):
    object = "chat.completion.chunk"
    id_prefix = "chatcmpl"
    shape = ChatCompletionChunk

    def choice(self, delta: ChoiceDelta, first: bool) -> ChatChunkChoice:
        return ChatChunkChoice(
            index=delta.index,
            delta=ChatDelta(role="assistant" if first else None, content=delta.text),
            logprobs=chat_logprobs(delta.logprobs) if delta.logprobs is not None else None,
            finish_reason=delta.finish_reason,
        )

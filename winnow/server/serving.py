"""The request path, the same for both endpoints:

validate -> render and tokenize the prompt -> resolve the strategy -> run it on a metered engine
-> response (whole, or streamed as SSE). Cancellation flows down: a client that disconnects or a
request past its wall time cancels the strategy task, which aborts every engine call it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from winnow.engine.base import Engine, SamplingSpec, TokenLogprob
from winnow.protocol.requests import ChatCompletionRequest, CompletionRequest
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
from winnow.rewards.base import ChatPrompt
from winnow.rewards.registry import MeteredRewards, RewardSet
from winnow.server.admission import Admission, Slot
from winnow.server.errors import APIError, as_api_error, error_body
from winnow.server.lifecycle import Drain
from winnow.server.metrics import Metrics
from winnow.settings import Settings
from winnow.strategies import registry
from winnow.strategies.base import (
    ChoiceDelta,
    GenerationRequest,
    MeteredEngine,
    StrategyResult,
    UsageMeter,
)

log = logging.getLogger("winnow.server")


@dataclass
class ServerState:
    settings: Settings
    engine: Engine
    metrics: Metrics
    rewards: RewardSet
    created: int = field(default_factory=now)
    admission: Admission | None = None
    drain: Drain | None = None
    engine_suspect: bool = False  # the engine was found unavailable: check before admitting

    def __post_init__(self) -> None:
        if self.admission is None:
            self.admission = Admission(
                self.settings.max_running_requests, self.settings.max_queued_requests
            )
        if self.drain is None:
            self.drain = Drain(self.settings.shutdown_timeout)

    @property
    def model_name(self) -> str:
        """The served name: --served-model-name, else the engine's (known once it started)."""
        return self.settings.served_model_name or self.engine.info.name


@dataclass
class Job:
    """One prompt of a request, ready to run."""

    strategy: str
    request: GenerationRequest
    index_offset: int
    usage: UsageMeter = field(default_factory=UsageMeter)
    result: StrategyResult | None = None


# ---- preparing ---------------------------------------------------------------------------------


def _check_model(state: ServerState, model: str | None) -> None:
    if model is not None and model != state.model_name:
        raise APIError(
            404,
            f"model {model!r} does not exist; served: {state.model_name!r}",
            "model",
            "model_not_found",
        )


def _check_token_ids(state: ServerState, ids: list[int], param: str) -> None:
    """Token ids must name tokens: in [0, vocabulary size), or below 2**31 when the engine does
    not say its vocabulary (remote)."""
    vocab = state.engine.info.vocab_size
    bound = vocab or 2**31
    if any(t < 0 or t >= bound for t in ids):
        raise APIError(400, f"{param} must lie in [0, {vocab or 'the vocabulary size'})", param)


async def _prompt_ids(state: ServerState, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        ids = await state.engine.tokenize(prompt, add_special_tokens=True)
    else:
        ids = list(prompt)
        _check_token_ids(state, ids, "prompt")
    if not ids:
        raise APIError(400, "prompt is empty after tokenization", "prompt")
    return ids


def _max_tokens(state: ServerState, requested: int | None, prompt_len: int) -> int:
    context = state.engine.info.max_model_len
    room = context - prompt_len
    if room < 1:
        raise APIError(
            400,
            f"prompt is {prompt_len} tokens; the model's context is {context} tokens",
            "prompt",
            "context_length_exceeded",
        )
    cap = state.settings.max_tokens_cap
    if requested is None:
        return min(room, cap) if cap else room
    if cap and requested > cap:
        raise APIError(400, f"max_tokens is capped at {cap} on this server", "max_tokens")
    if requested > room:
        raise APIError(
            400,
            f"max_tokens {requested} plus the prompt's {prompt_len} tokens exceeds the model's "
            f"context of {context} tokens",
            "max_tokens",
            "context_length_exceeded",
        )
    return requested


async def prepare(state: ServerState, body: CompletionRequest | ChatCompletionRequest) -> list[Job]:
    _check_model(state, body.model)
    if body.n > state.settings.max_n:
        raise APIError(400, f"n is capped at {state.settings.max_n} on this server", "n")
    entry, params = registry.parse(body.strategy)
    if params.candidates() > state.settings.max_n:
        raise APIError(
            400,
            f"strategy samples {params.candidates()} candidates; this server's cap is "
            f"{state.settings.max_n} (--max-n)",
            "strategy.n",
        )
    max_tokens: int | None
    logprobs: int | None
    if isinstance(body, ChatCompletionRequest):
        try:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        except ValueError as exc:
            raise APIError(400, str(exc), "messages") from None
        rendered = await state.engine.apply_chat_template(messages, body.add_generation_prompt)
        prompts: list[str | list[int]] = [ChatPrompt(rendered, messages)]  # see ChatPrompt
        max_tokens = body.max_completion_tokens or body.max_tokens
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        if body.top_logprobs and not body.logprobs:
            raise APIError(400, "top_logprobs requires logprobs to be true", "top_logprobs")
    else:
        raw = body.prompt
        if isinstance(raw, str):
            prompts = [raw]
        elif raw and isinstance(raw[0], int):
            prompts = [list(raw)]  # type: ignore[arg-type]
        else:
            prompts = list(raw)  # type: ignore[arg-type]
        max_tokens = body.max_tokens
        logprobs = body.logprobs
        if body.echo and body.logprobs is not None:
            raise APIError(400, "echo together with logprobs is not supported", "echo")

    _check_token_ids(state, body.stop_token_ids or [], "stop_token_ids")
    jobs = []
    for i, prompt in enumerate(prompts):
        ids = await _prompt_ids(state, prompt)
        text = prompt if isinstance(prompt, str) else await state.engine.detokenize(prompt)
        spec = SamplingSpec(
            prompt=tuple(ids),
            n=body.n,
            max_tokens=_max_tokens(state, max_tokens, len(ids)),
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=max(body.top_k or 0, 0),
            min_p=body.min_p or 0.0,
            presence_penalty=body.presence_penalty or 0.0,
            frequency_penalty=body.frequency_penalty or 0.0,
            repetition_penalty=body.repetition_penalty or 1.0,
            seed=body.seed,
            stop=tuple(body.stop_list()),
            stop_token_ids=tuple(body.stop_token_ids or ()),
            logprobs=logprobs,
            ignore_eos=body.ignore_eos,
        )
        request = GenerationRequest(spec, prompt_text=text, params=params, user=body.user)
        if spec.temperature == 0.0 and spec.n > 1:
            raise APIError(400, "n > 1 needs temperature > 0 (greedy samples are equal)", "n")
        params.check(request)
        jobs.append(Job(entry.name, request, i * body.n))
    _check_budget(state, entry.name, jobs)
    return jobs


def _check_budget(state: ServerState, strategy: str, jobs: list[Job]) -> None:
    """Refuse a request whose strategy may generate more than --max-request-tokens, before any
    work; with the cap set, each job is also held to its declared budget while it runs."""
    cap = state.settings.max_request_tokens
    if cap is None:
        return
    budgets = [job.request.params.token_budget(job.request) for job in jobs]
    if sum(budgets) > cap:
        per_prompt = f" ({len(jobs)} prompts)" if len(jobs) > 1 else ""
        raise APIError(
            400,
            f"strategy {strategy!r} may generate up to {sum(budgets)} tokens for this "
            f"request{per_prompt} (kept and discarded); this server's cap is {cap} tokens per "
            "request (--max-request-tokens): lower max_tokens or the strategy's budget "
            "(n, depth, ...)",
            "strategy",
            "token_budget_exceeded",
        )
    for job, budget in zip(jobs, budgets, strict=True):
        job.usage.token_limit = budget


# ---- running -----------------------------------------------------------------------------------


async def run_job(state: ServerState, job: Job) -> StrategyResult:
    entry = registry.get(job.strategy)
    engine = MeteredEngine(state.engine, job.usage)
    rewards = MeteredRewards(state.rewards, job.usage)
    job.result = await entry.run(job.request, engine, rewards)
    return job.result


async def _wait_disconnect(request: Request) -> None:
    """Return once the client has gone (the body is read already, so this only sees that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def admit(admission: Admission, request: Request) -> Slot:
    """A running place; a client that leaves while its request waits in the queue leaves the
    queue (a 499 nobody reads) instead of holding a place there."""
    acquire = asyncio.ensure_future(admission.acquire())
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    admitted = False
    try:
        done, _ = await asyncio.wait({acquire, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if acquire in done:
            admitted = True
            return acquire.result()
        raise APIError(499, "client disconnected while queued", code="client_disconnected")
    finally:
        watcher.cancel()
        if not acquire.done():
            acquire.cancel()
        elif not admitted and not acquire.cancelled() and acquire.exception() is None:
            acquire.result().release()  # admitted just as the client left
        with contextlib.suppress(BaseException):
            await asyncio.gather(acquire, watcher, return_exceptions=True)


async def run_until_disconnect(
    request: Request, work: Awaitable[Any], timeout: float | None
) -> Any:
    """Run ``work``; cancel it (aborting its engine calls) if the client leaves or time runs out."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    state = getattr(request.app.state, "winnow", None)
    drain: Drain | None = state.drain if state is not None else None
    aborter = asyncio.ensure_future(
        drain.wait_aborted() if drain is not None else asyncio.Event().wait()
    )
    try:
        done, _ = await asyncio.wait(
            {task, watcher, aborter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            return task.result()
        if watcher in done:
            raise APIError(499, "client disconnected", code="client_disconnected")
        if aborter in done and drain is not None:
            raise drain.abort_error()
        raise APIError(504, f"request exceeded its wall time of {timeout:g} s", code="timeout")
    finally:
        for t in (task, watcher, aborter):
            t.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(task, watcher, aborter, return_exceptions=True)


def total_usage(jobs: Sequence[Job], include_winnow: bool = True) -> Usage:
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
    )
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        winnow=extension if include_winnow else None,
    )


def _winnow_info(jobs: Sequence[Job]) -> WinnowInfo | None:
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


async def completion_response(
    state: ServerState, body: CompletionRequest, jobs: Sequence[Job]
) -> CompletionResponse:
    choices = []
    for job in jobs:
        assert job.result is not None
        prefix = ""
        if body.echo:
            prefix = await state.engine.detokenize(job.request.spec.prompt)  # type: ignore[arg-type]
        for c in job.result.choices:
            choices.append(
                CompletionChoice(
                    index=job.index_offset + c.index,
                    text=prefix + c.text,
                    logprobs=completion_logprobs(c.logprobs) if c.logprobs is not None else None,
                    finish_reason=c.finish_reason,
                )
            )
    return CompletionResponse(
        id=new_id("cmpl"),
        created=now(),
        model=state.model_name,
        choices=choices,
        usage=total_usage(jobs),
        winnow=_winnow_info(jobs),
    )


def chat_response(state: ServerState, jobs: Sequence[Job]) -> ChatCompletionResponse:
    (job,) = jobs
    assert job.result is not None
    choices = [
        ChatChoice(
            index=c.index,
            message=ChatMessageOut(content=c.text),
            logprobs=chat_logprobs(c.logprobs) if c.logprobs is not None else None,
            finish_reason=c.finish_reason,
        )
        for c in job.result.choices
    ]
    return ChatCompletionResponse(
        id=new_id("chatcmpl"),
        created=now(),
        model=state.model_name,
        choices=choices,
        usage=total_usage(jobs),
        winnow=_winnow_info(jobs),
    )


# ---- streaming ---------------------------------------------------------------------------------


class QueueSink:
    """Where a streaming strategy sends its deltas; the SSE writer drains it."""

    def __init__(self, queue: asyncio.Queue[tuple[int, Sequence[ChoiceDelta]]], offset: int):
        self._queue = queue
        self._offset = offset
        self.used = False

    async def send(self, deltas: Sequence[ChoiceDelta]) -> None:
        self.used = True
        await self._queue.put((self._offset, deltas))


ChunkMaker = Callable[[Sequence[ChoiceDelta], set[int]], dict[str, Any]]
"""(deltas, indices seen for the first time) -> one SSE chunk."""


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def stream_jobs(
    state: ServerState,
    jobs: Sequence[Job],
    make_chunk: ChunkMaker,
    usage_chunk: Callable[[Usage], dict[str, Any]],
    include_usage: bool,
    timeout: float | None,
    on_first_token: Callable[[], None],
) -> AsyncIterator[bytes]:
    """Run the jobs, turning deltas into SSE chunks; a deciding strategy's choices go out whole.

    Leaving this generator early (client gone) cancels the jobs, which aborts their engine work.
    """
    queue: asyncio.Queue[tuple[int, Sequence[ChoiceDelta]]] = asyncio.Queue(maxsize=256)
    for job in jobs:
        job.request.sink = QueueSink(queue, job.index_offset)
    done_marker = object()

    async def run_all() -> object:
        await asyncio.gather(*(run_job(state, j) for j in jobs))
        return done_marker

    task = asyncio.ensure_future(run_all())
    assert state.drain is not None
    aborter = asyncio.ensure_future(state.drain.wait_aborted())
    started: set[int] = set()
    deadline = None if timeout is None else time.monotonic() + timeout
    first = True
    getter: asyncio.Future[tuple[int, Sequence[ChoiceDelta]]] | None = None
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
            done, _ = await asyncio.wait(
                {getter, task, aborter}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if getter in done:
                offset, deltas = getter.result()
                shifted = _shift(offset, deltas)
                if first:
                    on_first_token()
                    first = False
                yield sse(make_chunk(shifted, _mark_started(started, shifted)))
                continue
            getter.cancel()
            if task in done:
                break
            if aborter in done:
                raise state.drain.abort_error()
            raise TimeoutError
        task.result()  # re-raise a strategy failure
        while not queue.empty():  # deltas sent just before the end
            offset, deltas = queue.get_nowait()
            shifted = _shift(offset, deltas)
            yield sse(make_chunk(shifted, _mark_started(started, shifted)))
        for job in jobs:
            assert job.result is not None
            if job.result.streamed:
                continue
            whole = [
                ChoiceDelta(
                    job.index_offset + c.index, c.text, c.token_ids, c.finish_reason, c.logprobs
                )
                for c in job.result.choices
            ]
            if first:
                on_first_token()
                first = False
            yield sse(make_chunk(whole, _mark_started(started, whole)))
        info = _winnow_info(jobs)
        if info is not None and info.trace:  # asked for: one chunk with no choices carries it
            yield sse({**make_chunk([], set()), "winnow": info.model_dump()})
        if include_usage:
            yield sse(usage_chunk(total_usage(jobs)))
        yield sse("[DONE]")
    except TimeoutError:
        yield sse(
            error_body(504, f"request exceeded its wall time of {timeout:g} s", None, "timeout")
        )
        yield sse("[DONE]")
    except APIError as exc:
        yield sse(error_body(exc.status, exc.message, exc.param, exc.code))
        yield sse("[DONE]")
    except Exception as exc:  # the stream has begun: report in-band, as OpenAI does
        err = as_api_error(exc)
        if err.status >= 500:
            log.error("strategy failed while streaming: %r", exc, exc_info=err.status == 500)
        yield sse(error_body(err.status, err.message, err.param, err.code))
        yield sse("[DONE]")
    finally:
        aborter.cancel()
        if getter is not None:
            getter.cancel()  # the client left while we waited for output
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _shift(offset: int, deltas: Sequence[ChoiceDelta]) -> list[ChoiceDelta]:
    """A prompt's deltas with choice indices moved to that prompt's place in the response."""
    return [
        ChoiceDelta(offset + d.index, d.text, d.token_ids, d.finish_reason, d.logprobs)
        for d in deltas
    ]


def _mark_started(started: set[int], deltas: Sequence[ChoiceDelta]) -> set[int]:
    """Return the indices that appear for the first time (chat sends the role with those)."""
    fresh = {d.index for d in deltas} - started
    started.update(fresh)
    return fresh


def completion_chunk_maker(state: ServerState, response_id: str, created: int) -> ChunkMaker:
    def make(deltas: Sequence[ChoiceDelta], fresh: set[int]) -> dict[str, Any]:
        choices = [
            CompletionChoice(
                index=d.index,
                text=d.text,
                logprobs=completion_logprobs(d.logprobs) if d.logprobs is not None else None,
                finish_reason=d.finish_reason,
            )
            for d in deltas
        ]
        return CompletionResponse(
            id=response_id, created=created, model=state.model_name, choices=choices
        ).model_dump(exclude_none=True)

    return make


def chat_chunk_maker(state: ServerState, response_id: str, created: int) -> ChunkMaker:
    def make(deltas: Sequence[ChoiceDelta], fresh: set[int]) -> dict[str, Any]:
        choices = [
            ChatChunkChoice(
                index=d.index,
                delta=ChatDelta(role="assistant" if d.index in fresh else None, content=d.text),
                logprobs=chat_logprobs(d.logprobs) if d.logprobs is not None else None,
                finish_reason=d.finish_reason,
            )
            for d in deltas
        ]
        chunk = ChatCompletionChunk(
            id=response_id, created=created, model=state.model_name, choices=choices
        )
        return chunk.model_dump(exclude_none=True)

    return make

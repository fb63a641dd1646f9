"""One request's whole path, the same for both endpoints:

prepare (validate; bound the request's size; render and tokenize the prompts off the event loop;
resolve the strategy; check the budget) -> admit (a running place, or 429; then the strategy's
reference is checked, in a worker process) -> run (the strategy on a metered engine, one job per
prompt) -> render (the whole response, or SSE chunks as the strategy sends them).

:meth:`Serving.serve` runs these steps; :class:`CompletionServing` and :class:`ChatServing` say
what differs, how a body becomes prompts and how the answer is shaped. Cancellation flows down:
a client that disconnects, a request past its wall time or a drain past its deadline cancels
the strategy task, which aborts every engine call it started.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from fastapi import Request

from winnow.engine.base import Engine, EngineError, EngineUnavailable, SamplingSpec
from winnow.protocol.requests import ChatCompletionRequest, CompletionRequest, SamplingFields
from winnow.protocol.responses import ChatCompletionResponse, CompletionResponse, now
from winnow.rewards.base import ChatPrompt
from winnow.rewards.registry import RewardSet
from winnow.server import offload, render
from winnow.server.admission import Admission, Slot
from winnow.server.cancellation import admit, run_until_disconnect
from winnow.server.errors import APIError, status_for
from winnow.server.jobs import Job, run_jobs
from winnow.server.lifecycle import Drain
from winnow.server.metrics import Metrics
from winnow.server.references import check_reference
from winnow.server.streaming import EventStream, SlotStreamingResponse
from winnow.settings import Settings
from winnow.strategies import registry
from winnow.strategies.base import GenerationRequest, StrategyParams

log = logging.getLogger("winnow.server")

Body = TypeVar("Body", bound=SamplingFields)
Response = CompletionResponse | ChatCompletionResponse
Prompt = str | list[int]
MESSAGE_CHARS = 32  # what a chat message counts beyond its text (its template's framing)


@dataclass
class ServerState:
    """What every request of one app shares."""

    settings: Settings
    engine: Engine
    metrics: Metrics
    rewards: RewardSet
    created: int = field(default_factory=now)
    admission: Admission = field(init=False)
    drain: Drain = field(init=False)
    engine_suspect: bool = False  # the engine was found unavailable: check before admitting

    def __post_init__(self) -> None:
        self.admission = Admission(
            self.settings.max_running_requests, self.settings.max_queued_requests
        )
        self.drain = Drain(self.settings.shutdown_timeout)

    @property
    def model_name(self) -> str:
        """The served name: --served-model-name, else the engine's (known once it started)."""
        return self.settings.served_model_name or self.engine.info.name


class Serving(abc.ABC, Generic[Body]):
    """One endpoint's request path; a subclass says how its body becomes prompts and how its
    answer is shaped."""

    endpoint: ClassVar[str]  # the metrics label
    chunks: ClassVar[type[render.Chunks]]
    prompt_param: ClassVar[str]  # the field that holds the prompts (errors' ``param``)

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def serve(self, body: Body, request: Request) -> Any:
        """prepare -> admit -> run -> render; /metrics counts every outcome."""
        if body.model_extra:
            log.info("ignoring unknown fields on %s: %s", self.endpoint, sorted(body.model_extra))
        state, metrics = self.state, self.state.metrics
        started = time.perf_counter()
        strategy = "unknown"
        try:
            state.drain.check_open()
            jobs = await self.prepare(body)
            strategy = jobs[0].strategy
            await self._check_engine()
            slot = await admit(state.admission, request)
        except Exception as exc:  # APIError, StrategyError (a 400), an engine's error
            metrics.requests.labels(self.endpoint, strategy, str(status_for(exc))).inc()
            raise
        try:  # the one parameter whose text is read: admitted first, then in a worker process
            await check_reference(jobs[0].request.params)
        except BaseException as exc:
            slot.release()
            metrics.requests.labels(self.endpoint, strategy, str(status_for(exc))).inc()
            raise
        if body.stream:
            return self._stream(body, jobs, started, slot)

        metrics.in_flight.labels(strategy).inc()
        status = "200"
        try:
            work = run_jobs(jobs, state.engine, state.rewards)
            await run_until_disconnect(request, work, state.settings.request_timeout, state.drain)
            response = await self.response(body, jobs)
            metrics.latency.labels(strategy).observe(time.perf_counter() - started)
            metrics.count_usage(strategy, response.usage)
            return response
        except Exception as exc:
            status = str(status_for(exc))
            if isinstance(exc, EngineUnavailable):
                state.engine_suspect = True
            raise
        finally:
            slot.release()
            metrics.in_flight.labels(strategy).dec()
            metrics.requests.labels(self.endpoint, strategy, status).inc()

    # ---- prepare ------------------------------------------------------------------------------

    async def prepare(self, body: Body) -> list[Job]:
        """Everything that can be refused is refused here, before any generation; what is
        cheap first (counts and lengths), then the prompts' rendering and tokenization, which
        run off the event loop (:mod:`.offload`)."""
        settings = self.state.settings
        self._check_model(body.model)
        if body.n > settings.max_n:
            raise APIError(400, f"n is capped at {settings.max_n} on this server", "n")
        entry, params = registry.parse(body.strategy)
        if params.candidates() > settings.max_n:
            raise APIError(
                400,
                f"strategy samples {params.candidates()} candidates; this server's cap is "
                f"{settings.max_n} (--max-n)",
                "strategy.n",
            )
        self._check_sequences(body, params)
        check_prompt_chars(self.prompt_chars(body), settings.max_prompt_chars, self.prompt_param)
        prompts = await self.prompts(body)
        max_tokens, logprobs = self.output_limits(body)
        self._check_token_ids(body.stop_token_ids or [], "stop_token_ids")
        jobs = []
        for i, prompt in enumerate(prompts):
            request = await self._generation_request(body, prompt, params, max_tokens, logprobs)
            jobs.append(Job(entry.name, request, i * body.n))
        self._check_budget(entry.name, jobs)
        return jobs

    @abc.abstractmethod
    def prompt_count(self, body: Body) -> int:
        """How many prompts the body has (each is one job), without reading them."""

    @abc.abstractmethod
    def prompt_chars(self, body: Body) -> int:
        """The size of the body's prompt text, before any rendering (see check_prompt_chars)."""

    @abc.abstractmethod
    async def prompts(self, body: Body) -> list[Prompt]:
        """The body's prompts, as text or token ids."""

    def _check_sequences(self, body: Body, params: StrategyParams) -> None:
        """At most --max-request-sequences sequences sampled at once: prompts x candidates
        (``n`` is capped per prompt, and a request may have 64 prompts)."""
        cap = self.state.settings.max_request_sequences
        prompts, per_prompt = self.prompt_count(body), max(body.n, params.candidates())
        if prompts * per_prompt > cap:
            if prompts > 1:
                param = self.prompt_param
            else:
                param = "n" if body.n >= params.candidates() else "strategy.n"
            raise APIError(
                400,
                f"this request samples {prompts * per_prompt} sequences ({prompts} prompt(s) x "
                f"{per_prompt}); this server's cap is {cap} per request "
                "(--max-request-sequences)",
                param,
                "too_many_sequences",
            )

    @abc.abstractmethod
    def output_limits(self, body: Body) -> tuple[int | None, int | None]:
        """(max_tokens, logprobs) as the body asks for them, in this endpoint's own fields."""

    async def _generation_request(
        self,
        body: Body,
        prompt: Prompt,
        params: StrategyParams,
        max_tokens: int | None,
        logprobs: int | None,
    ) -> GenerationRequest:
        """One prompt as its strategy sees it; the only place the wire's sampling fields become
        a :class:`SamplingSpec`."""
        ids = await self._prompt_ids(prompt)
        engine = self.state.engine
        text = prompt if isinstance(prompt, str) else await offload.detokenize(engine, prompt)
        spec = SamplingSpec(
            prompt=tuple(ids),
            n=body.n,
            max_tokens=self._max_tokens(max_tokens, len(ids)),
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
        return request

    def _check_model(self, model: str | None) -> None:
        served = self.state.model_name
        if model is not None and model != served:
            message = f"model {model!r} does not exist; served: {served!r}"
            raise APIError(404, message, "model", "model_not_found")

    def _check_token_ids(self, ids: list[int], param: str) -> None:
        """Token ids must name tokens: in [0, vocabulary size), or below 2**31 when the engine
        does not say its vocabulary (remote)."""
        vocab = self.state.engine.info.vocab_size
        bound = vocab or 2**31
        if any(t < 0 or t >= bound for t in ids):
            raise APIError(400, f"{param} must lie in [0, {vocab or 'the vocabulary size'})", param)

    async def _prompt_ids(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            ids = await offload.tokenize(self.state.engine, prompt, add_special_tokens=True)
        else:
            ids = list(prompt)
            self._check_token_ids(ids, "prompt")
        if not ids:
            raise APIError(400, "prompt is empty after tokenization", "prompt")
        return ids

    def _max_tokens(self, requested: int | None, prompt_len: int) -> int:
        context = self.state.engine.info.max_model_len
        room = context - prompt_len
        if room < 1:
            raise APIError(
                400,
                f"prompt is {prompt_len} tokens; the model's context is {context} tokens",
                "prompt",
                "context_length_exceeded",
            )
        cap = self.state.settings.max_tokens_cap
        if requested is None:
            return min(room, cap) if cap else room
        if cap and requested > cap:
            raise APIError(400, f"max_tokens is capped at {cap} on this server", "max_tokens")
        if requested > room:
            raise APIError(
                400,
                f"max_tokens {requested} plus the prompt's {prompt_len} tokens exceeds the "
                f"model's context of {context} tokens",
                "max_tokens",
                "context_length_exceeded",
            )
        return requested

    def _check_budget(self, strategy: str, jobs: list[Job]) -> None:
        """Refuse a request whose strategy may generate more than --max-request-tokens, before
        any work; with the cap set, each job is also held to its declared budget as it runs."""
        cap = self.state.settings.max_request_tokens
        if cap is None:
            return
        budgets = [job.request.params.token_budget(job.request) for job in jobs]
        if sum(budgets) > cap:
            per_prompt = f" ({len(jobs)} prompts)" if len(jobs) > 1 else ""
            raise APIError(
                400,
                f"strategy {strategy!r} may generate up to {sum(budgets)} tokens for this "
                f"request{per_prompt} (kept and discarded); this server's cap is {cap} tokens "
                "per request (--max-request-tokens): lower max_tokens or the strategy's budget "
                "(n, depth, ...)",
                "strategy",
                "token_budget_exceeded",
            )
        for job, budget in zip(jobs, budgets, strict=True):
            job.usage.token_limit = budget

    # ---- admit --------------------------------------------------------------------------------

    async def _check_engine(self) -> None:
        """Once a request or /health found the engine unavailable, ask it before admitting more:
        a 503 at once instead of queueing (or a 429) for an engine that is dead."""
        if not self.state.engine_suspect:
            return
        try:
            await self.state.engine.check_health()
        except EngineError as exc:
            raise APIError(503, f"engine unavailable: {exc}", code="engine_unavailable") from None
        self.state.engine_suspect = False

    # ---- render -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def response(self, body: Body, jobs: Sequence[Job]) -> Response:
        """The whole response, once every job is done."""

    def _stream(
        self, body: Body, jobs: list[Job], started: float, slot: Slot
    ) -> SlotStreamingResponse:
        """Run the jobs while their output goes out as SSE; the slot is held to the end."""
        state, metrics = self.state, self.state.metrics
        strategy = jobs[0].strategy
        timeout = state.settings.request_timeout

        def first_output() -> None:
            metrics.ttft.labels(strategy).observe(time.perf_counter() - started)

        events = EventStream(
            jobs=jobs,
            run=lambda: run_jobs(jobs, state.engine, state.rewards),
            chunks=self.chunks(state.model_name),
            include_usage=bool(body.stream_options and body.stream_options.include_usage),
            timeout=timeout,
            drain=state.drain,
            on_first_output=first_output,
            on_usage=lambda usage: metrics.count_usage(strategy, usage),
        )

        async def sent() -> AsyncIterator[bytes]:
            metrics.in_flight.labels(strategy).inc()
            try:
                async with contextlib.aclosing(aiter(events)) as chunks:
                    async for chunk in chunks:
                        yield chunk
                metrics.latency.labels(strategy).observe(time.perf_counter() - started)
            finally:
                slot.release()
                metrics.in_flight.labels(strategy).dec()
                metrics.requests.labels(self.endpoint, strategy, str(events.status)).inc()

        return SlotStreamingResponse(slot, timeout, sent(), media_type="text/event-stream")


class CompletionServing(Serving[CompletionRequest]):
    """``POST /v1/completions``: one prompt or several (one job each), text or token ids."""

    endpoint = "completions"
    chunks = render.CompletionChunks
    prompt_param = "prompt"

    def prompt_count(self, body: CompletionRequest) -> int:
        raw = body.prompt
        return len(raw) if isinstance(raw, list) and isinstance(raw[0], str | list) else 1

    def prompt_chars(self, body: CompletionRequest) -> int:
        raw = body.prompt
        if isinstance(raw, str):
            return len(raw)
        # text prompts, or token ids (each decoded to text: counted as one character)
        return sum(len(p) for p in raw) if isinstance(raw[0], str | list) else len(raw)

    async def prompts(self, body: CompletionRequest) -> list[Prompt]:
        raw = body.prompt
        if isinstance(raw, str):
            return [raw]
        if raw and isinstance(raw[0], int):
            return [list(raw)]  # type: ignore[arg-type]
        return list(raw)  # type: ignore[arg-type]

    def output_limits(self, body: CompletionRequest) -> tuple[int | None, int | None]:
        if body.echo and body.logprobs is not None:
            raise APIError(400, "echo together with logprobs is not supported", "echo")
        return body.max_tokens, body.logprobs

    async def response(self, body: CompletionRequest, jobs: Sequence[Job]) -> Response:
        engine = self.state.engine
        prefixes = [
            await offload.detokenize(engine, job.request.spec.prompt) if body.echo else ""
            for job in jobs
        ]
        return render.completion_response(self.state.model_name, jobs, prefixes)


class ChatServing(Serving[ChatCompletionRequest]):
    """``POST /v1/chat/completions``: the messages rendered with the model's chat template."""

    endpoint = "chat"
    chunks = render.ChatChunks
    prompt_param = "messages"

    def prompt_count(self, body: ChatCompletionRequest) -> int:
        return 1

    def prompt_chars(self, body: ChatCompletionRequest) -> int:
        return sum(message_chars(m.content) for m in body.messages)

    async def prompts(self, body: ChatCompletionRequest) -> list[Prompt]:
        try:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        except ValueError as exc:
            raise APIError(400, str(exc), "messages") from None
        rendered = await offload.apply_chat_template(
            self.state.engine, messages, body.add_generation_prompt
        )
        return [ChatPrompt(rendered, messages)]  # see ChatPrompt

    def output_limits(self, body: ChatCompletionRequest) -> tuple[int | None, int | None]:
        if body.top_logprobs and not body.logprobs:
            raise APIError(400, "top_logprobs requires logprobs to be true", "top_logprobs")
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        return body.max_completion_tokens or body.max_tokens, logprobs

    async def response(self, body: ChatCompletionRequest, jobs: Sequence[Job]) -> Response:
        return render.chat_response(self.state.model_name, jobs)


def message_chars(content: str | list[dict[str, Any]] | None) -> int:
    """What one chat message counts towards --max-prompt-chars: its text (its content parts'
    texts), plus :data:`MESSAGE_CHARS` for its template's framing. Nothing is joined or
    checked here (that is for rendering): this only counts."""
    if isinstance(content, list):
        text = sum(len(p["text"]) for p in content if isinstance(p.get("text"), str))
    else:
        text = len(content or "")
    return text + MESSAGE_CHARS


def check_prompt_chars(chars: int, cap: int, param: str) -> None:
    """Refuse a request whose prompt text is over --max-prompt-chars before anything renders
    or tokenizes it (that work is bounded by this, not by the body's size)."""
    if chars > cap:
        raise APIError(
            400,
            f"the request's prompt text is {chars} characters (a chat message counts "
            f"{MESSAGE_CHARS} beyond its text); this server's cap is {cap} "
            "(--max-prompt-chars)",
            param,
            "prompt_too_long",
        )

"""The load generator behind ``winnow bench serve``, following vLLM's ``bench serve``.

Works against any OpenAI-compatible base URL (winnow, or a plain vLLM server), so the two are
measured the same way. A run sends a fixed number of requests on vLLM's arrival process
(:mod:`winnow.clients.arrivals`), optionally capped at ``max_concurrency`` in flight, times each
one (TTFT, ITL, E2EL; TPOT from those) and reads the token counts from the response's ``usage``,
including winnow's ``usage.winnow`` when the server sends it. Every run stops by itself: the
request count is fixed and every request has a timeout.

Two deliberate differences from vLLM's client, both to compare servers fairly: only chunks that
carry text count as tokens for TTFT / ITL (a role-only or finish-only chunk does not), and E2EL
ends when the stream ends (after the usage chunk), which is when a client has the whole answer.

Besides plain requests (client kind ``openai``) it can run the naive client-side best-of-N
pipeline peers use (``naive_best_of_n``, :mod:`winnow.clients.naive`): each "request" is then n
separate completions at ``base_url`` plus one ``POST /v1/rewards`` per candidate at
``reward_base_url``, so winnow's ``best_of_n`` can be measured against it at the same load.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from tqdm import tqdm

from winnow.clients.arrivals import arrival_times
from winnow.clients.errors import WinnowAPIError, api_error
from winnow.clients.naive import REWARDS_PATH, send_naive
from winnow.clients.prompts import BenchPrompt
from winnow.clients.stats import BenchMetrics, RequestResult, compute_metrics
from winnow.clients.wire import aiter_events, endpoint_path, request_body

ClientKind = Literal["openai", "naive_best_of_n"]
CLIENT_KINDS: tuple[ClientKind, ...] = ("openai", "naive_best_of_n")


@dataclass(frozen=True)
class BenchConfig:
    base_url: str = "http://127.0.0.1:8000/v1"
    endpoint: str = "completions"  # or "chat"
    model: str | None = None  # None: the first model the server lists
    api_key: str | None = None
    request_rate: float = math.inf
    burstiness: float = 1.0
    max_concurrency: int | None = None
    num_warmups: int = 0
    max_tokens: int | None = 64
    temperature: float | None = None
    ignore_eos: bool = False
    extra_body: Mapping[str, Any] | None = None
    stream: bool = True
    goodput: Mapping[str, float] | None = None  # SLOs in ms: ttft, tpot, e2el
    seed: int = 0
    timeout: float = 600.0  # per request, seconds
    progress: bool = True
    # the naive client-side best-of-N pipeline (client="naive_best_of_n")
    client: ClientKind = "openai"
    naive_n: int = 8  # separate completion requests per prompt
    reward: str = "default"  # the reward each candidate is scored with
    reward_base_url: str | None = None  # where POST /rewards goes; None: base_url
    reward_api_key: str | None = None  # None: api_key
    naive_sequential: bool = False  # one call after the other (a plain for-loop client)

    def __post_init__(self) -> None:
        endpoint_path(self.endpoint)  # validates
        if self.client not in CLIENT_KINDS:
            raise ValueError(f"client must be one of {CLIENT_KINDS}, not {self.client!r}")
        if self.client == "naive_best_of_n":
            if self.stream:
                raise ValueError("the naive best-of-N pipeline is not streamed: use stream=False")
            if self.naive_n < 1:
                raise ValueError("naive_n must be >= 1")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.goodput and "tpot" in self.goodput and not self.stream:
            raise ValueError("a TPOT goodput SLO needs streaming (TPOT is not measurable else)")


@dataclass
class BenchRun:
    """One run: its configuration, every request's result, and the statistics."""

    config: BenchConfig
    model: str | None
    date: str
    results: list[RequestResult]
    metrics: BenchMetrics
    extra: dict[str, Any] = field(default_factory=dict)  # free labels (e.g. "server")


def build_body(cfg: BenchConfig, model: str | None, prompt: BenchPrompt) -> dict[str, Any]:
    """The request for one prompt, with ``--extra-body`` merged in last."""
    payload: dict[str, Any] = {"model": model}
    if cfg.endpoint == "chat":
        payload["messages"] = prompt.chat_messages()
    else:
        payload["prompt"] = prompt.text
    payload.update(max_tokens=cfg.max_tokens, temperature=cfg.temperature)
    if cfg.ignore_eos:
        payload["ignore_eos"] = True
    return request_body(payload, stream=cfg.stream, extra_body=cfg.extra_body)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _has_text(event: Mapping[str, Any]) -> bool:
    for choice in event.get("choices") or ():
        if choice.get("text") or (choice.get("delta") or {}).get("content"):
            return True
    return False


def _take_usage(result: RequestResult, usage: Mapping[str, Any] | None) -> bool:
    if not usage:
        return False
    result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    result.output_tokens = int(usage.get("completion_tokens") or 0)
    if isinstance(usage.get("winnow"), dict):
        result.winnow = dict(usage["winnow"])
    return True


async def _streamed(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any], st: float
) -> RequestResult:
    result = RequestResult(success=False, streamed=True)
    last = first_choice = None
    text_chunks = 0
    has_usage = False
    async with http.stream("POST", url, json=body, headers=headers) as r:
        if r.status_code != 200:
            raise api_error(r.status_code, await r.aread())
        async for event in aiter_events(r.aiter_lines()):
            now = time.perf_counter()
            if event.get("choices") and first_choice is None:
                first_choice = now
            if _has_text(event):
                if last is None:
                    result.ttft = now - st
                else:
                    result.itl.append(now - last)
                last = now
                text_chunks += 1
            has_usage = _take_usage(result, event.get("usage")) or has_usage
    result.e2el = time.perf_counter() - st
    if result.ttft is None and first_choice is not None:
        result.ttft = first_choice - st  # an answer of special tokens only: no text at all
    if result.ttft is None:
        raise WinnowAPIError(502, "the stream ended without any choice")
    if not has_usage:  # the server ignored stream_options.include_usage: count chunks
        result.output_tokens = text_chunks
    result.success = True
    return result


async def _whole(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any], st: float
) -> RequestResult:
    r = await http.post(url, json=body, headers=headers)
    end = time.perf_counter()
    if r.status_code != 200:
        raise api_error(r.status_code, r.content)
    result = RequestResult(success=True, streamed=False, e2el=end - st, ttft=end - st)
    _take_usage(result, r.json().get("usage"))
    return result


async def send_request(
    http: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    *,
    api_key: str | None = None,
    t0: float | None = None,
) -> RequestResult:
    """Send one request and time it; never raises for request failures (they are results)."""
    st = time.perf_counter()
    headers = _headers(api_key)
    try:
        if body.get("stream"):
            result = await _streamed(http, url, headers, body, st)
        else:
            result = await _whole(http, url, headers, body, st)
    except (httpx.HTTPError, WinnowAPIError, ValueError) as exc:
        message = str(exc) if isinstance(exc, WinnowAPIError) else repr(exc)
        elapsed, streamed = time.perf_counter() - st, bool(body.get("stream"))
        result = RequestResult(False, e2el=elapsed, streamed=streamed, error=message)
    result.start = st - (t0 if t0 is not None else st)
    return result


async def resolve_model(http: httpx.AsyncClient, cfg: BenchConfig) -> str | None:
    """The ``--model``, else the first model the server lists (None if it lists none)."""
    if cfg.model:
        return cfg.model
    try:
        r = await http.get(cfg.base_url.rstrip("/") + "/models", headers=_headers(cfg.api_key))
        if r.status_code == 200 and (data := r.json().get("data")):
            return str(data[0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        pass
    return None


def _client(cfg: BenchConfig, requests: int) -> httpx.AsyncClient:
    per_request = 2 * cfg.naive_n if cfg.client == "naive_best_of_n" else 1
    pool = max(1, min((cfg.max_concurrency or requests) * per_request, 4096))
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    # waiting for a pooled connection is part of the offered load, not a failure: no pool timeout
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(cfg.timeout, pool=None))


Sender = Callable[[dict[str, Any], float], Awaitable[RequestResult]]


async def _send_all(
    bodies: Sequence[dict[str, Any]],
    offsets: Sequence[float],
    send: Sender,
    max_concurrency: int | None,
    on_done: Callable[[], object] = lambda: None,
) -> tuple[list[RequestResult], float]:
    """Send ``bodies[i]`` at ``offsets[i]`` (then wait for a slot under the cap); results, wall."""
    slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    t0 = time.perf_counter()

    async def one(body: dict[str, Any]) -> RequestResult:
        if slots is None:
            result = await send(body, t0)
        else:
            async with slots:
                result = await send(body, t0)
        on_done()
        return result

    tasks = []
    for body, offset in zip(bodies, offsets, strict=True):
        if (delay := t0 + offset - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(body)))
    results = await asyncio.gather(*tasks)
    return list(results), time.perf_counter() - t0


def _sender(cfg: BenchConfig, http: httpx.AsyncClient) -> Sender:
    """How one request of the run is sent and timed, for the configured client kind."""
    url = cfg.base_url.rstrip("/") + endpoint_path(cfg.endpoint)
    if cfg.client == "openai":

        async def send(body: dict[str, Any], t0: float) -> RequestResult:
            return await send_request(http, url, body, api_key=cfg.api_key, t0=t0)

        return send
    rewards_url = (cfg.reward_base_url or cfg.base_url).rstrip("/") + REWARDS_PATH
    reward_key = cfg.reward_api_key if cfg.reward_api_key is not None else cfg.api_key

    async def send_pipeline(body: dict[str, Any], t0: float) -> RequestResult:
        return await send_naive(
            http, url, rewards_url, body, n=cfg.naive_n, reward=cfg.reward,
            headers=_headers(cfg.api_key), reward_headers=_headers(reward_key),
            sequential=cfg.naive_sequential, t0=t0,
        )  # fmt: skip

    return send_pipeline


async def run_benchmark(cfg: BenchConfig, prompts: Sequence[BenchPrompt]) -> BenchRun:
    """One run over ``prompts`` (one request each) after ``cfg.num_warmups`` warm-up requests."""
    async with _client(cfg, len(prompts)) as http:
        send = _sender(cfg, http)

        model = await resolve_model(http, cfg)
        bodies = [build_body(cfg, model, p) for p in prompts]
        if cfg.num_warmups and bodies:
            warm = [bodies[i % len(bodies)] for i in range(cfg.num_warmups)]
            await _send_all(warm, [0.0] * len(warm), send, cfg.max_concurrency)
        offsets = arrival_times(len(bodies), cfg.request_rate, cfg.burstiness, cfg.seed)
        date = datetime.now(UTC).isoformat(timespec="seconds")
        with tqdm(total=len(bodies), disable=not cfg.progress, file=sys.stderr) as bar:
            results, duration = await _send_all(
                bodies, offsets, send, cfg.max_concurrency, bar.update
            )
    metrics = compute_metrics(results, duration, cfg.goodput)
    return BenchRun(cfg, model, date, results, metrics)


async def run_sweep(
    cfg: BenchConfig, prompts: Sequence[BenchPrompt], rates: Sequence[float]
) -> list[BenchRun]:
    """One run per offered rate, in order; warm-ups only before the first."""
    runs = []
    for i, rate in enumerate(rates):
        step = replace(cfg, request_rate=rate, num_warmups=cfg.num_warmups if i == 0 else 0)
        runs.append(await run_benchmark(step, prompts))
    return runs

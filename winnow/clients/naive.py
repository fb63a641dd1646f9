"""The naive client-side best-of-N pipeline, as peers run it, as a load-generator client kind.

One "request" of this kind is what a client without winnow does to get a best-of-N answer: send
``n`` separate completion requests (n=1 each) to a generation server, then one reward request per
candidate (``POST /v1/rewards``, winnow's scoring endpoint) and keep the best-scored candidate.
The ``n`` completions go out concurrently, and so do the ``n`` reward requests once every
candidate is back: the strongest form of the naive pipeline (its_hub scores in sequential batches
of 4; a slower baseline would flatter winnow). ``sequential=True`` is the plain for-loop client
instead: one completion after the other, then one reward request after the other.

Its result is one :class:`~winnow.clients.stats.RequestResult` timed from the first send to the
last score, not streamed. Its ``usage``-like counters are filled the way winnow reports
best-of-N, so the two read the same: ``output_tokens`` is the chosen candidate's,
``winnow["generated_tokens"]`` every candidate's, ``engine_calls`` the completion requests sent
and ``reward_calls`` the reward calls the scoring server counted; the prompt counts once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from winnow.clients.errors import WinnowAPIError, api_error
from winnow.clients.stats import RequestResult

REWARDS_PATH = "/rewards"
T = TypeVar("T")


@dataclass(frozen=True)
class Candidate:
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class NaiveOutcome:
    """What one naive best-of-N request produced (the load generator keeps only the timing)."""

    candidates: list[Candidate]
    scores: list[float]
    chosen: int
    reward_calls: int
    reward_tokens: int


def _choice_text(data: Mapping[str, Any]) -> str:
    choice = (data.get("choices") or [{}])[0]
    if "message" in choice:
        return str((choice.get("message") or {}).get("content") or "")
    return str(choice.get("text") or "")


def candidate_body(body: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The ``index``-th of the n separate requests: one sample, not streamed; a given ``seed``
    becomes ``seed + index`` (the same seed would make every candidate the same)."""
    one = {k: v for k, v in body.items() if k not in ("n", "stream", "stream_options")}
    if isinstance(one.get("seed"), int):
        one["seed"] += index
    return one


def reward_item(body: Mapping[str, Any], response: str) -> dict[str, Any]:
    """The rewards-API item for one candidate: the request's messages (chat) or prompt text."""
    if "messages" in body:
        return {"messages": list(body["messages"]), "response": response}
    return {"prompt": body["prompt"], "response": response}


async def _post(
    http: httpx.AsyncClient, url: str, json: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    r = await http.post(url, json=json, headers=headers)
    if r.status_code != 200:
        raise api_error(r.status_code, r.content)
    data = r.json()
    if not isinstance(data, dict):
        raise WinnowAPIError(502, f"{url}: expected a JSON object")
    return data


async def _complete(
    http: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> Candidate:
    data = await _post(http, url, body, headers)
    usage = data.get("usage") or {}
    return Candidate(
        _choice_text(data),
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )


async def _score(
    http: httpx.AsyncClient, url: str, reward: str, item: dict[str, Any], headers: dict[str, str]
) -> tuple[float, int, int]:
    data = await _post(http, url, {"reward": reward, "items": [item]}, headers)
    score = (data.get("data") or [{}])[0].get("score")
    usage = data.get("usage") or {}
    value = float(score) if score is not None else math.nan
    return value, int(usage.get("reward_calls") or 0), int(usage.get("reward_tokens") or 0)


async def _all_at_once(calls: list[Coroutine[Any, Any, T]]) -> list[T]:
    return list(await asyncio.gather(*calls))


async def _one_by_one(calls: list[Coroutine[Any, Any, T]]) -> list[T]:
    return [await call for call in calls]


async def naive_best_of_n(
    http: httpx.AsyncClient,
    generate_url: str,
    rewards_url: str,
    body: Mapping[str, Any],
    *,
    n: int,
    reward: str = "default",
    headers: Mapping[str, str] | None = None,
    reward_headers: Mapping[str, str] | None = None,
    sequential: bool = False,
) -> NaiveOutcome:
    """``n`` separate completions of ``body`` at ``generate_url``, each scored by its own
    ``POST rewards_url``; the best score wins (the first on ties; unscored candidates lose)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    gen_headers = dict(headers or {})
    rw_headers = dict(reward_headers if reward_headers is not None else gen_headers)
    run = _one_by_one if sequential else _all_at_once
    candidates = await run(
        [_complete(http, generate_url, candidate_body(body, i), gen_headers) for i in range(n)]
    )
    scored = await run(
        [
            _score(http, rewards_url, reward, reward_item(body, c.text), rw_headers)
            for c in candidates
        ]
    )
    scores = [s for s, _, _ in scored]
    ranked = [-math.inf if math.isnan(s) else s for s in scores]
    chosen = max(range(n), key=lambda i: (ranked[i], -i))
    return NaiveOutcome(
        list(candidates),
        scores,
        chosen,
        reward_calls=sum(c for _, c, _ in scored),
        reward_tokens=sum(t for _, _, t in scored),
    )


def outcome_result(outcome: NaiveOutcome, e2el: float) -> RequestResult:
    """The outcome as one load-generator result, counted as winnow counts best-of-N."""
    generated = sum(c.completion_tokens for c in outcome.candidates)
    chosen = outcome.candidates[outcome.chosen].completion_tokens
    return RequestResult(
        success=True,
        e2el=e2el,
        ttft=e2el,
        streamed=False,
        prompt_tokens=outcome.candidates[0].prompt_tokens,
        output_tokens=chosen,
        winnow={
            "generated_tokens": generated,
            "discarded_tokens": generated - chosen,
            "engine_calls": len(outcome.candidates),
            "reward_calls": outcome.reward_calls,
            "reward_tokens": outcome.reward_tokens,
        },
    )


async def send_naive(
    http: httpx.AsyncClient,
    generate_url: str,
    rewards_url: str,
    body: Mapping[str, Any],
    *,
    n: int,
    reward: str,
    headers: Mapping[str, str] | None = None,
    reward_headers: Mapping[str, str] | None = None,
    sequential: bool = False,
    t0: float | None = None,
) -> RequestResult:
    """Run and time one naive best-of-N request; failures are results, never raised."""
    st = time.perf_counter()
    try:
        outcome = await naive_best_of_n(
            http, generate_url, rewards_url, body, n=n, reward=reward, headers=headers,
            reward_headers=reward_headers, sequential=sequential,
        )  # fmt: skip
        result = outcome_result(outcome, time.perf_counter() - st)
    except (httpx.HTTPError, WinnowAPIError, ValueError, KeyError, TypeError) as exc:
        message = str(exc) if isinstance(exc, WinnowAPIError) else repr(exc)
        result = RequestResult(False, e2el=time.perf_counter() - st, streamed=False, error=message)
    result.start = st - (t0 if t0 is not None else st)
    return result

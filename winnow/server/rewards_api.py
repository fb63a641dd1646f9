"""`POST /v1/rewards`: score (prompt, response) pairs or (prompt, steps) with a named reward.

The same path as a completion (:mod:`winnow.server.serving`): check (cheap: counts, lengths,
shapes; nothing rendered) -> admit (a running place, or 429; refused while draining) -> run
(the chat messages rendered off the event loop, then the reward) under the request's wall time,
counted in /metrics with endpoint "rewards".
"""

from __future__ import annotations

import time
from typing import ClassVar

from fastapi import Request

from winnow.metering.rewards import MeteredRewards
from winnow.metering.usage import UsageMeter
from winnow.protocol.rewards import (
    RewardDomain,
    RewardItemIn,
    RewardRequest,
    RewardResponse,
    RewardScore,
    RewardUsage,
)
from winnow.rewards.base import ChatPrompt, OutcomeItem, ProcessItem, RewardInfo
from winnow.server import offload
from winnow.server.cancellation import admit, run_until_disconnect
from winnow.server.errors import APIError, status_for
from winnow.server.serving import ServerState, check_prompt_chars, message_chars


class RewardServing:
    """``POST /v1/rewards``."""

    endpoint: ClassVar[str] = "rewards"
    label: ClassVar[str] = "rewards"  # the metrics' strategy label

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def serve(self, body: RewardRequest, request: Request) -> RewardResponse:
        """check -> admit -> run; /metrics counts every outcome."""
        state, metrics = self.state, self.state.metrics
        started = time.perf_counter()
        try:
            state.drain.check_open()
            self.check(body)
            slot = await admit(state.admission, request)
        except Exception as exc:
            metrics.requests.labels(self.endpoint, self.label, str(status_for(exc))).inc()
            raise
        metrics.in_flight.labels(self.label).inc()
        status = "200"
        try:
            work = score_items(state, body)
            timeout = state.settings.request_timeout
            response: RewardResponse = await run_until_disconnect(
                request, work, timeout, state.drain
            )
            metrics.latency.labels(self.label).observe(time.perf_counter() - started)
            return response
        except Exception as exc:
            status = str(status_for(exc))
            raise
        finally:
            slot.release()
            metrics.in_flight.labels(self.label).dec()
            metrics.requests.labels(self.endpoint, self.label, status).inc()

    def check(self, body: RewardRequest) -> None:
        """Everything refused before admission, without rendering or reading any text."""
        settings = self.state.settings
        cap = settings.max_request_sequences
        if len(body.items) > cap:
            raise APIError(
                400,
                f"this request scores {len(body.items)} items; this server's cap is {cap} per "
                "request (--max-request-sequences)",
                "items",
                "too_many_sequences",
            )
        for i, item in enumerate(body.items):
            if (item.prompt is None) == (item.messages is None):
                raise APIError(400, "give exactly one of prompt or messages", f"items.{i}.prompt")
        chars = sum(
            len(item.prompt)
            if item.prompt is not None
            else sum(message_chars(m.content) for m in item.messages or [])
            for item in body.items
        )
        check_prompt_chars(chars, settings.max_prompt_chars, "items")
        info = MeteredRewards(self.state.rewards, UsageMeter()).info(body.reward)
        _check_shape(body, info)


def _check_shape(body: RewardRequest, info: RewardInfo) -> None:
    name = body.reward if isinstance(body.reward, str) else "composite"
    steps_given = [item.steps is not None for item in body.items]
    if any(steps_given) and not all(steps_given):
        raise APIError(400, "give steps for every item or for none", "items")
    if all(steps_given):
        if info.kind != "process":
            raise APIError(400, f"reward {name!r} is an outcome reward: send response", "items")
        return
    for i, item in enumerate(body.items):
        if item.response is None:
            raise APIError(400, "each item needs a response (or steps)", f"items.{i}")


def _messages(item: RewardItemIn, index: int) -> list[dict[str, str]]:
    try:
        return [{"role": m.role, "content": m.text()} for m in item.messages or []]
    except ValueError as exc:
        raise APIError(400, str(exc), f"items.{index}.messages") from None


async def _prompts(state: ServerState, items: list[RewardItemIn]) -> list[str]:
    """Each item's prompt: its text, or its messages in the policy's rendering (for the probes;
    reward models render the messages themselves), all rendered in one hop off the loop."""
    chats = {i: _messages(item, i) for i, item in enumerate(items) if item.prompt is None}
    rendered = await offload.apply_chat_templates(state.engine, list(chats.values()))
    texts = dict(zip(chats, rendered, strict=True))
    return [
        item.prompt if item.prompt is not None else ChatPrompt(texts[i], chats[i])
        for i, item in enumerate(items)
    ]


async def score_items(state: ServerState, body: RewardRequest) -> RewardResponse:
    """Score the items (checked already by :meth:`RewardServing.check`)."""
    usage = UsageMeter()
    rewards = MeteredRewards(state.rewards, usage)
    info = rewards.info(body.reward)
    name = body.reward if isinstance(body.reward, str) else "composite"
    _check_shape(body, info)
    prompts = await _prompts(state, body.items)
    if all(item.steps is not None for item in body.items):
        items = [
            ProcessItem(p, tuple(it.steps or ()), it.partial, it.reference)
            for p, it in zip(prompts, body.items, strict=True)
        ]
        scored = await rewards.score_steps(body.reward, items)
        data = [
            RewardScore(index=i, score=s[-1] if s else None, step_scores=s)
            for i, s in enumerate(scored.scores)
        ]
    else:
        outcome = [
            OutcomeItem(p, it.response or "", it.reference)
            for p, it in zip(prompts, body.items, strict=True)
        ]
        result = await rewards.score(body.reward, outcome)
        domain = result.domain or [None] * len(result.scores)
        data = [
            RewardScore(
                index=i, score=s, domain=RewardDomain(**d.model_dump()) if d is not None else None
            )
            for i, (s, d) in enumerate(zip(result.scores, domain, strict=True))
        ]
    return RewardResponse(
        reward=name,
        kind=info.kind,
        data=data,
        usage=RewardUsage(
            reward_calls=usage.reward_calls,
            reward_tokens=usage.reward_tokens,
            reward_cached_tokens=usage.reward_cached_tokens,
        ),
    )

"""`POST /v1/rewards`: score (prompt, response) pairs or (prompt, steps) with a named reward."""

from __future__ import annotations

from winnow.metering import UsageMeter
from winnow.protocol.rewards import (
    RewardItemIn,
    RewardRequest,
    RewardResponse,
    RewardScore,
    RewardUsage,
)
from winnow.rewards.base import ChatPrompt, OutcomeItem, ProcessItem
from winnow.rewards.registry import MeteredRewards
from winnow.server.errors import APIError
from winnow.server.serving import ServerState


async def _prompt(state: ServerState, item: RewardItemIn, index: int) -> str:
    if (item.prompt is None) == (item.messages is None):
        raise APIError(400, "give exactly one of prompt or messages", f"items.{index}.prompt")
    if item.prompt is not None:
        return item.prompt
    messages = [{"role": m.role, "content": m.text()} for m in item.messages or []]
    # the policy's rendering for the probes; reward models render the messages themselves
    return ChatPrompt(await state.engine.apply_chat_template(messages), messages)


async def score_items(state: ServerState, body: RewardRequest) -> RewardResponse:
    usage = UsageMeter()
    rewards = MeteredRewards(state.rewards, usage)
    info = rewards.info(body.reward)
    name = body.reward if isinstance(body.reward, str) else "composite"
    prompts = [await _prompt(state, item, i) for i, item in enumerate(body.items)]
    steps_given = [item.steps is not None for item in body.items]
    if any(steps_given) and not all(steps_given):
        raise APIError(400, "give steps for every item or for none", "items")
    if all(steps_given):
        if info.kind != "process":
            raise APIError(400, f"reward {name!r} is an outcome reward: send response", "items")
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
        for i, item in enumerate(body.items):
            if item.response is None:
                raise APIError(400, "each item needs a response (or steps)", f"items.{i}")
        outcome = [
            OutcomeItem(p, it.response or "", it.reference)
            for p, it in zip(prompts, body.items, strict=True)
        ]
        result = await rewards.score(body.reward, outcome)
        data = [RewardScore(index=i, score=s) for i, s in enumerate(result.scores)]
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

"""A generative judge: P(Yes) to "is this answer correct?", from the policy engine or from another
OpenAI-compatible endpoint and model (``base_url``, ``model``, ``api_key_env``;
:mod:`.judge_endpoint`).

No extra weights: each item becomes one chat prompt (``config.template`` with ``{question}`` and
``{answer}``, default :data:`DEFAULT_TEMPLATE`, ending with "Answer Yes or No."), rendered with
the engine's chat template, and one engine call with ``max_tokens=1, temperature=0,
logprobs=20``. The score is the softmax over the logprobs of the Yes-variants and No-variants
(" Yes", "Yes", "yes", " no"... any token that is "yes"/"no" once stripped and lower-cased) among
the top-20 first tokens. A variant outside the top 20 counts as absent; if neither side appears
the judge has no opinion and the score is 0.5.

``{question}`` receives ``item.prompt`` as it is: the policy's rendered chat text, template
markers included. Recovering the bare question from an arbitrary chat template is fragile, and
the judge is the policy itself, which reads its own template well enough.

At ``base_url`` the verdict prompt is sent as the one user message of a chat completion (the
endpoint applies its model's template) and ``{question}`` receives the question as the request's
last user message. Items are judged concurrently, at most ``max_concurrency`` verdicts in flight
per reward; ``tokens`` counts the prompt tokens of every verdict prompt. A
small policy is a weak judge of its own answers (measured near chance on the default model):
this backend is offered for larger models, never used by default.
"""

from __future__ import annotations

import asyncio
import math
import string
from collections.abc import Iterable, Sequence

from winnow.engine.base import Engine, SamplingSpec
from winnow.rewards.base import OutcomeItem, Reward, RewardError, RewardInfo, Scored
from winnow.rewards.configs import JudgeConfig, RewardConfigError
from winnow.rewards.formats import question

DEFAULT_TEMPLATE = (
    "Below is a question and a proposed answer.\n\n"
    "Question:\n{question}\n\n"
    "Proposed answer:\n{answer}\n\n"
    "Is the proposed answer correct? Answer Yes or No."
)
TOP_LOGPROBS = 20
_FIELDS = {"question", "answer"}


def yes_probability(candidates: Iterable[tuple[int, str, float]]) -> float:
    """P(Yes) from ``(token id, token text, logprob)`` candidates of the first token.

    Softmax over the Yes- and No-variants present (each token id counted once); 0.5 when none is.
    """
    seen: set[int] = set()
    yes: list[float] = []
    no: list[float] = []
    for token_id, text, logprob in candidates:
        word = text.strip().lower()
        if token_id in seen or word not in ("yes", "no") or math.isinf(logprob):
            continue
        seen.add(token_id)
        (yes if word == "yes" else no).append(logprob)
    if not yes and not no:
        return 0.5
    top = max(yes + no)
    p_yes = sum(math.exp(lp - top) for lp in yes)
    p_no = sum(math.exp(lp - top) for lp in no)
    return p_yes / (p_yes + p_no)


def check_template(name: str, template: str) -> str:
    """The template if it uses exactly ``{question}`` and ``{answer}``, else a config error."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        template.format(question="", answer="")
    except (ValueError, KeyError, IndexError) as exc:
        raise RewardConfigError(f"reward {name!r}: bad template: {exc}") from None
    if fields != _FIELDS:
        raise RewardConfigError(
            f"reward {name!r}: the template must use {{question}} and {{answer}} and nothing "
            f"else; it uses {sorted(fields)}"
        )
    return template


class JudgeReward(Reward):
    """Outcome reward: P(Yes) of the shared policy engine; see the module docstring."""

    def __init__(self, config: JudgeConfig, engine: Engine | None) -> None:
        from winnow.rewards.judge_endpoint import JudgeEndpoint

        self.engine = engine
        self.endpoint = None if config.base_url is None else JudgeEndpoint(config, TOP_LOGPROBS)
        if self.engine is None and self.endpoint is None:
            raise RewardConfigError(
                f"reward {config.name!r}: the judge needs the policy engine or a base_url"
            )
        self.template = check_template(config.name, config.template or DEFAULT_TEMPLATE)
        self.limit = asyncio.Semaphore(config.max_concurrency)
        where: dict[str, object] = {"max_concurrency": config.max_concurrency}
        if config.base_url is not None:
            where |= {"base_url": config.base_url, "model": config.model}
        self._info = RewardInfo(
            name=config.name,
            kind="outcome",
            backend="judge",
            scale="probability in [0, 1] that the policy answers Yes (0.5: no opinion)",
            description=(
                "generative judge: the policy's P(Yes) when asked whether the answer is correct; "
                "weak on small models"
                if self.endpoint is None
                else f"generative judge: {config.model}'s P(Yes) when asked whether the answer "
                "is correct"
            ),
            extra={"template": self.template, "top_logprobs": TOP_LOGPROBS, **where},
        )

    @property
    def info(self) -> RewardInfo:
        return self._info

    async def verdict_prompt(self, item: OutcomeItem) -> str:
        assert self.engine is not None
        content = self.template.format(question=item.prompt, answer=item.response)
        return await self.engine.apply_chat_template([{"role": "user", "content": content}])

    async def judge(self, item: OutcomeItem) -> tuple[float, int]:
        """P(Yes) for one item and the prompt tokens it took."""
        async with self.limit:
            if self.endpoint is not None:
                content = self.template.format(question=question(item.prompt), answer=item.response)
                candidates, tokens = await self.endpoint.verdict(content)
                return yes_probability(candidates), tokens
            return await self._engine_judge(item)

    async def _engine_judge(self, item: OutcomeItem) -> tuple[float, int]:
        assert self.engine is not None
        spec = SamplingSpec(
            prompt=await self.verdict_prompt(item),
            max_tokens=1,
            temperature=0.0,
            logprobs=TOP_LOGPROBS,
        )
        generation = await self.engine.generate(spec)
        completion = generation.completions[0]
        if not completion.logprobs:
            raise RewardError(f"reward {self.info.name!r}: the engine returned no logprobs")
        first = completion.logprobs[0]
        candidates = (*first.top, (first.token_id, first.token, first.logprob))
        return yes_probability(candidates), len(generation.prompt_token_ids)

    async def score(self, items: Sequence[OutcomeItem]) -> Scored:
        tasks = [asyncio.ensure_future(self.judge(item)) for item in items]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:  # one failed or the caller left: abort the other engine calls
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return Scored([p for p, _ in results], sum(n for _, n in results))

    async def shutdown(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.close()

"""Sampling the policy's answers for `winnow train fit`, journaled and resumable.

Two ways to reach the policy, one :class:`Sampler` seam: the in-process engine
(:class:`EngineSampler`, any :class:`~winnow.engine.base.Engine`), or any OpenAI-compatible server
(:class:`HttpSampler`: a running ``winnow serve`` or ``vllm serve`` of the same model, by
``--base-url``), which asks ``POST /v1/chat/completions`` with ``n`` answers per question.

Either way the prompt stored in the journal is the chat rendered by the policy's own template
(the engine's, or the model directory's tokenizer for a server): the text the features are read
on. With a prompt template (``--prompt-template``, a base model's: :mod:`winnow.train.prompting`)
each question is asked as that completion prompt instead, never through the chat template (a
server is asked ``POST /v1/completions``), and the journal stores that text.

The journal is :class:`~winnow.train.samples.QuestionSamples` lines, one per question
(``question`` holds the question's id, :attr:`~winnow.train.questions.QuestionRow.id`), appended
as each finishes: a re-run asks only the questions not in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from winnow.train.prompting import Ask, ask_of
from winnow.train.questions import QuestionRow
from winnow.train.samples import Journal, QuestionSamples, Sample, sample_answers

Render = Callable[[list[dict[str, str]]], str]


class Sampler(Protocol):
    async def sample(
        self,
        ask: Ask,
        *,
        n: int,
        max_tokens: int,
        temperature: float,
        seed: int,
    ) -> tuple[str, list[Sample]]:
        """The prompt text and ``n`` answers to one question: a chat (rendered by the model's
        template) or a completion prompt (asked as is)."""
        ...


class EngineSampler:
    """The policy in-process: any engine of the seam (vLLM's, or the fake one in tests)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def sample(
        self, ask: Ask, *, n: int, max_tokens: int, temperature: float, seed: int
    ) -> tuple[str, list[Sample]]:
        prompt, _, generation = await sample_answers(
            self.engine, ask, n=n, max_tokens=max_tokens, temperature=temperature, seed=seed
        )
        return prompt, [
            Sample(c.text, list(c.token_ids), c.finish_reason) for c in generation.completions
        ]


class HttpSampler:
    """The policy behind an OpenAI-compatible server at ``base_url`` (with or without ``/v1``);
    ``model`` defaults to the first one ``GET /v1/models`` lists. ``render`` is the policy's
    chat template (the prompt the journal stores); a completion prompt is sent to
    ``/v1/completions`` as is and needs none (a base model's)."""

    def __init__(
        self,
        base_url: str,
        render: Render | None,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 600.0,
        transport: Any = None,
    ) -> None:
        import httpx

        root = base_url.rstrip("/")
        root = root[: -len("/v1")] if root.endswith("/v1") else root
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(
            base_url=root, headers=headers, timeout=timeout, transport=transport
        )
        self.render = render
        self.model = model

    async def _model(self) -> str:
        if self.model is None:
            response = await self.client.get("/v1/models")
            response.raise_for_status()
            self.model = str(response.json()["data"][0]["id"])
        return self.model

    async def sample(
        self, ask: Ask, *, n: int, max_tokens: int, temperature: float, seed: int
    ) -> tuple[str, list[Sample]]:
        settings = {"model": await self._model(), "n": n, "max_tokens": max_tokens,
                    "temperature": temperature, "seed": seed}  # fmt: skip
        if isinstance(ask, str):
            choices = await self._choices("/v1/completions", {**settings, "prompt": ask}, n)
            return ask, [Sample(str(c.get("text") or ""), None, c.get("finish_reason"))
                         for c in choices]  # fmt: skip
        if self.render is None:
            raise ValueError("a chat is rendered by the model's chat template: give render")
        choices = await self._choices("/v1/chat/completions", {**settings, "messages": ask}, n)
        samples = [
            Sample(str(c["message"].get("content") or ""), None, c.get("finish_reason"))
            for c in choices
        ]
        return self.render(ask), samples

    async def _choices(self, path: str, body: dict[str, Any], n: int) -> list[dict[str, Any]]:
        """The ``n`` choices the server gives to ``body`` at ``path``, in index order."""
        response = await self.client.post(path, json=body)
        if response.status_code != 200:
            raise RuntimeError(
                f"{str(self.client.base_url).rstrip('/')}{path} answered {response.status_code}: "
                f"{response.text[:500]}"
            )
        choices = sorted(response.json()["choices"], key=lambda c: c["index"])
        if len(choices) != n:
            raise RuntimeError(f"asked for {n} answers, the server gave {len(choices)}")
        return choices

    async def close(self) -> None:
        await self.client.aclose()


async def sample_journaled(
    sampler: Sampler,
    rows: Sequence[QuestionRow],
    journal: Path,
    *,
    n: int,
    max_tokens: int,
    temperature: float,
    seed: int = 0,
    concurrency: int = 4,
    template: str | None = None,
    log_every: int = 10,
) -> list[QuestionSamples]:
    """``n`` answers to every question, each question appended to ``journal`` as it finishes;
    questions already there are not asked again. Returns the records in ``rows`` order.
    ``template``: each question is asked as this completion prompt, not as its chat."""
    ids = [row.id for row in rows]
    written = Journal(journal, QuestionSamples.from_json, ids)
    limit = asyncio.Semaphore(concurrency)

    def progress(seconds: float) -> str:
        finished = len(written.new)
        return (
            f"[fit] sampled {len(written.done)}/{len(rows)} questions "
            f"({finished} this run, {finished / seconds * 60:.1f}/min)"
        )

    async def one(index: int) -> None:
        row = rows[index]
        async with limit:
            prompt, samples = await sampler.sample(
                ask_of(row, template), n=n, max_tokens=max_tokens, temperature=temperature,
                seed=seed * 1_000_003 + _stable(row.id),
            )  # fmt: skip
        record = QuestionSamples(row.task or "", row.id, row.answer, prompt, samples)
        await written.append(record, log_every, progress)

    await asyncio.gather(*(one(i) for i in written.todo))
    return [written.done[i] for i in ids]


def _stable(text: str) -> int:
    """A per-question seed offset that does not depend on the question's place in the list (a
    resumed run with more questions samples the old ones as the first run would have)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:3], "big")

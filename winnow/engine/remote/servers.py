"""The servers behind a :class:`~winnow.engine.remote.backend.RemoteEngine`: what it learns about
them at
start (the model card, tokenizer facts, which of winnow's logits processors each runs, the
segment sentinel) and which of them a call may go to.

A plain vLLM OpenAI server cannot cut CARDS segments or steer by value models; one started with
``winnow worker`` (:mod:`winnow.engine.remote.worker`) loads winnow's processors and can. At
connect,
:func:`probe_worker` asks each server, for each processor a remote call can use
(:data:`STEERING`), with one completion of one token carrying ``vllm_xargs`` ``{"winnow_probe":
name}``: a worker running that processor refuses it with a fixed message (its
``validate_params``, see :mod:`winnow.engine.processors.args`), before generating anything; a
plain vLLM ignores the unknown argument and answers 200. The reward tap is never asked for: its
channel back is a file on the engine's machine.

A call that needs a processor goes round robin among the workers that run it
(:class:`Workers`); with none, it is refused as before.

The segment sentinel must be among the call's ``stop_token_ids``, which the sender writes, so
the backend picks it before sending, as the local engine does (``pick_sentinel``: the first of
:data:`~winnow.engine.processors.specs.SENTINEL_CANDIDATES` the tokenizer has), from the
worker's own tokenizer: :func:`find_sentinel` takes the first candidate that the worker's
``/tokenize`` reads as one token and whose ``/detokenize`` gives the candidate back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import httpx

from winnow.engine.base import EngineError, EngineUnavailable
from winnow.engine.processors.specs import (
    PROBE_KEY,
    SEGMENT,
    SENTINEL_CANDIDATES,
    VAS,
    probe_answer,
)
from winnow.engine.remote.wire import error_message, raise_for_status, refusal

log = logging.getLogger("winnow.engine")

HEALTH_TIMEOUT = 5.0

STEERING = (SEGMENT, VAS)
"""The processors a remote call can use (the tap's channel is a local file: never remote)."""


async def model_card(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """The first model ``/v1/models`` of the server at ``url`` lists."""
    try:
        response = await client.get(f"{url}/v1/models")
    except httpx.TransportError as exc:
        raise EngineUnavailable(f"remote vLLM at {url} is not reachable: {exc!r}") from exc
    await raise_for_status(response)
    cards = response.json().get("data") or []
    if not cards:
        raise EngineError(f"remote vLLM at {url} serves no model")
    return dict(cards[0])


async def health(client: httpx.AsyncClient, url: str) -> tuple[bool, str]:
    """Whether the server at ``url`` is healthy, and what it said (for messages)."""
    try:
        response = await client.get(f"{url}/health", timeout=HEALTH_TIMEOUT)
    except httpx.TransportError as exc:
        return False, f"{url}: {exc!r}"
    return response.status_code == 200, f"{url}: HTTP {response.status_code}"


async def tokenizer_facts(
    info: Mapping[str, Any] | None, tokenize: Callable[[str], Awaitable[list[int]]]
) -> tuple[tuple[int, ...], frozenset[int]]:
    """EOS ids and special-token ids, from ``/tokenizer_info`` (``info``) where the server
    offers it (``--enable-tokenizer-info-endpoint``); else none are known."""
    if info is None:
        return (), frozenset()
    # The endpoint flattens AddedToken to its text, losing the "special" flag: treat every
    # added token as special (true of chat-control tokens, which is what prompts contain).
    special = frozenset(int(key) for key in info.get("added_tokens_decoder") or {})
    eos = info.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    if not eos:
        return (), special
    ids = await tokenize(str(eos))
    return (tuple(ids) if len(ids) == 1 else ()), special


async def probe_worker(client: httpx.AsyncClient, url: str, model: str) -> frozenset[str]:
    """The processors of :data:`STEERING` that the server at ``url`` runs."""
    found = await asyncio.gather(*(_probe(client, url, model, name) for name in STEERING))
    return frozenset(name for name, ok in zip(STEERING, found, strict=True) if ok)


async def _probe(client: httpx.AsyncClient, url: str, model: str, name: str) -> bool:
    body = {
        "model": model,
        "prompt": "winnow",
        "max_tokens": 1,
        "temperature": 0.0,
        "vllm_xargs": {PROBE_KEY: name},
    }
    try:
        response = await client.post(f"{url}/v1/completions", json=body)
    except httpx.TransportError as exc:
        raise EngineUnavailable(f"remote vLLM at {url} is not reachable: {exc!r}") from exc
    if response.status_code == 400 and probe_answer(name) in error_message(response.text):
        return True
    if not response.is_success:
        log.warning(
            "remote vLLM at %s: probe for winnow's %s processor failed (HTTP %d: %s); taken "
            "as a plain server",
            url,
            name,
            response.status_code,
            error_message(response.text),
        )
    return False


async def find_sentinel(
    tokenize: Callable[[str], Awaitable[list[int]]],
    decode: Callable[[list[int]], Awaitable[str]],
) -> int | None:
    """The worker tokenizer's segment sentinel, picked as ``pick_sentinel`` picks it."""
    for token in SENTINEL_CANDIDATES:
        ids = await tokenize(token)
        if len(ids) == 1 and await decode(ids) == token:
            return int(ids[0])
    return None


class Workers:
    """The servers with the processors each runs; round robin over those a call may use."""

    def __init__(self, urls: Iterable[str]) -> None:
        self.urls = list(urls)
        self.processors: dict[str, frozenset[str]] = {url: frozenset() for url in self.urls}
        self._turns: dict[frozenset[str], itertools.count[int]] = {}

    async def probe(self, client: httpx.AsyncClient, model: str) -> None:
        """Ask every server which processors it runs (:func:`probe_worker`)."""
        found = await asyncio.gather(*(probe_worker(client, url, model) for url in self.urls))
        self.processors.update(zip(self.urls, found, strict=True))

    def summary(self) -> str:
        return ", ".join(
            f"{url} (winnow processors: {', '.join(sorted(names)) or 'none'})"
            for url, names in self.processors.items()
        )

    @property
    def steering(self) -> list[str]:
        """Processors that at least one server runs."""
        return sorted(set().union(*self.processors.values()))

    def describe(self) -> dict[str, list[str]]:
        return {url: sorted(names) for url, names in self.processors.items()}

    def capable(self, needs: frozenset[str]) -> list[str]:
        return [url for url in self.urls if needs <= self.processors[url]]

    def rotation(self, needs: frozenset[str] = frozenset()) -> list[str]:
        """The servers that run ``needs``, starting with the next in turn (refusal: none)."""
        urls = self.capable(needs)
        if not urls:
            raise refusal()
        first = next(self._turns.setdefault(needs, itertools.count())) % len(urls)
        return urls[first:] + urls[:first]

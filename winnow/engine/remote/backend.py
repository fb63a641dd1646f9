"""The generator seam over one or more remote OpenAI-compatible vLLM servers.

Every call goes to ``/v1/completions`` of the next server in a round robin (a server that refuses
the connection is skipped for that call). We ask vLLM for what the seam needs beyond the OpenAI
protocol: ``return_token_ids`` (prompt and completion token ids), ``return_tokens_as_token_ids``
(logprobs named by ``token_id:N``, as text is ambiguous), ``prompt_logprobs`` (ids, ranks and
texts) and ``vllm_xargs`` (per-request arguments for logits processors), so the servers must be
a recent vLLM. Token texts for logprobs come from the server's ``/detokenize``
(:mod:`winnow.engine.remote.token_texts`). A server started with
``--enable-tokenizer-info-endpoint``
also tells us the EOS and special-token ids (then :meth:`RemoteEngine.detokenize` skips special
tokens as the local engine does); ``--enable-prompt-tokens-details`` makes it report prefix-cache
hits. ``winnow worker`` starts a server with both, and with winnow's logits processors: at start
each server is asked which processors it runs (:mod:`winnow.engine.remote.servers`); cards'
segment cuts and vas go round robin among those that run them (``info.extra["steering"]``), and
are refused with none. The reward tap is never remote (``info.tap_model`` is None).

Cancelling :meth:`RemoteEngine.generate`, or closing the iterator of :meth:`RemoteEngine.stream`,
closes the HTTP connection; vLLM aborts a request whose client disconnected.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import httpx

from winnow.engine.base import (
    ChatMessage,
    Completion,
    CompletionDelta,
    Engine,
    EngineError,
    EngineUnavailable,
    Generation,
    ModelInfo,
    SamplingSpec,
    StreamEvent,
)
from winnow.engine.processors.specs import SEGMENT
from winnow.engine.remote.servers import (
    Workers,
    find_sentinel,
    health,
    model_card,
    tokenizer_facts,
)
from winnow.engine.remote.token_texts import TokenTexts
from winnow.engine.remote.wire import (
    ChoiceTokens,
    cached_tokens,
    choice_tokens,
    completion_payload,
    needed,
    normalize_url,
    origin,
    prompt_ids_without_text,
    prompt_logprob,
    raise_for_status,
    sse_events,
)
from winnow.models.tokens import PROBE, prefix_of, with_prefix

log = logging.getLogger("winnow.engine")

# Generation may take minutes: no read timeout (the server's request timeout caps wall time).
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=None, write=30.0, pool=None)
DEFAULT_LIMITS = httpx.Limits(max_connections=1024, max_keepalive_connections=64)


class RemoteEngine(Engine):
    """The seam over remote vLLM servers that all serve the same model (round robin)."""

    def __init__(
        self,
        urls: list[str],
        api_key: str | None = None,
        served_name: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not urls:
            raise ValueError("RemoteEngine needs at least one server URL")
        self.urls = [normalize_url(url) for url in urls]
        self._api_key = api_key
        self._served_name = served_name
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._info: ModelInfo | None = None
        self._model = ""  # the id the servers know the model by
        self._special_ids: frozenset[int] = frozenset()
        self._special_prefix: list[int] | None = None  # BOS or nothing, asked once
        self.workers = Workers(self.urls)  # the processors each runs, learnt at start
        self._sentinel: int | None = None  # ends uncertainty segments (as the local engine's)
        self._in_flight = 0
        self.texts = TokenTexts(self._decode)

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._client is not None:
            return
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=DEFAULT_TIMEOUT,
            limits=DEFAULT_LIMITS,
            transport=self._transport,
        )
        try:
            await self._connect()
        except BaseException:
            await self.shutdown()
            raise

    async def _connect(self) -> None:
        cards = await asyncio.gather(*(model_card(self.client, url) for url in self.urls))
        ids = {card["id"] for card in cards}
        if len(ids) > 1:
            raise EngineError(f"remote vLLM servers serve different models: {sorted(ids)}")
        card = cards[0]
        self._model = str(card["id"])
        response = await self._send("GET", "/tokenizer_info")
        info = response.json() if response.status_code == 200 else None
        eos_ids, self._special_ids = await tokenizer_facts(info, self.tokenize)
        await self.texts.setup(self.tokenize)
        await self.workers.probe(self.client, self._model)
        if SEGMENT in self.workers.steering:
            self._sentinel = await find_sentinel(self.tokenize, self._decode)
        self._info = ModelInfo(
            name=self._served_name or self._model,
            max_model_len=int(card.get("max_model_len") or 0),
            eos_token_ids=eos_ids,
            extra={
                "backend": "remote",
                "urls": list(self.urls),
                "remote_model": self._model,
                "steering": self.workers.steering,  # winnow processors some server runs
                "workers": self.workers.describe(),  # url -> the processors it runs
            },
        )
        log.info("remote vLLM engine: %s at %s", self._model, self.workers.summary())

    async def shutdown(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise EngineUnavailable("remote engine not started")
        return self._client

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise EngineUnavailable("remote engine not started")
        return self._info

    async def check_health(self) -> None:
        results = await asyncio.gather(*(health(self.client, url) for url in self.urls))
        if not any(ok for ok, _ in results):
            raise EngineUnavailable(
                "no remote vLLM is healthy: " + "; ".join(r for _, r in results)
            )

    async def running_requests(self) -> int:
        """Generation calls of this process still waiting on a server."""
        return self._in_flight

    # ---- transport ----------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        stream: bool = False,
        needs: frozenset[str] = frozenset(),
    ) -> httpx.Response:
        """Send to the next server in turn (of those running the processors ``needs``), moving
        on while servers refuse the connection."""
        failures = []
        for url in self.workers.rotation(needs):
            request = self.client.build_request(method, url + path, json=body)
            try:
                return await self.client.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failures.append(f"{url}: {exc!r}")
            except httpx.TransportError as exc:
                raise EngineUnavailable(f"lost the connection to {url}: {exc!r}") from exc
        raise EngineUnavailable("no remote vLLM reachable: " + "; ".join(failures))

    async def _post(self, path: str, body: Any, needs: frozenset[str] = frozenset()) -> Any:
        """POST and return the JSON body; cancelling closes the connection (vLLM then aborts)."""
        response = await self._send("POST", path, body, stream=True, needs=needs)
        try:
            await raise_for_status(response)
            await response.aread()
        except httpx.TransportError as exc:
            raise EngineUnavailable(f"lost the connection to {origin(response)}: {exc!r}") from exc
        finally:
            await response.aclose()
        return response.json()

    # ---- tokens -------------------------------------------------------------------------------

    async def tokenize(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """As the local engine: the special prefix (BOS) once, not again before a chat rendered
        with its own (:mod:`winnow.models.tokens`); the prefix is asked of the server once."""
        ids = await self._tokenize(text, add_special_tokens=False)
        if not add_special_tokens:
            return ids
        if self._special_prefix is None:
            self._special_prefix = prefix_of(
                await self._tokenize(PROBE, add_special_tokens=False),
                await self._tokenize(PROBE, add_special_tokens=True),
            )
        return with_prefix(self._special_prefix, ids)

    async def _tokenize(self, text: str, add_special_tokens: bool) -> list[int]:
        body = {"model": self._model, "prompt": text, "add_special_tokens": add_special_tokens}
        return [int(t) for t in (await self._post("/tokenize", body))["tokens"]]

    async def _decode(self, token_ids: list[int]) -> str:
        """``tokenizer.decode(ids)`` on the server, special tokens kept."""
        if not token_ids:
            return ""
        body = {"model": self._model, "tokens": token_ids}
        return str((await self._post("/detokenize", body))["prompt"])

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        """Like the local engine (``skip_special_tokens=True``) as far as special ids are known."""
        return await self._decode([t for t in token_ids if t not in self._special_ids])

    async def apply_chat_template(
        self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True
    ) -> str:
        """The server renders and tokenizes the messages; decoding the ids gives the text back
        (byte-level tokenizers round-trip exactly)."""
        body = {
            "model": self._model,
            "messages": list(messages),
            "add_generation_prompt": add_generation_prompt,
        }
        return await self._decode((await self._post("/tokenize", body))["tokens"])

    # ---- sampling -----------------------------------------------------------------------------

    def _payload(self, spec: SamplingSpec, stream: bool) -> tuple[dict[str, Any], frozenset[str]]:
        """The call's body and the processors it needs (refused if no server runs them)."""
        needs = needed(spec)
        steered = bool(needs and self.workers.capable(needs))
        payload = completion_payload(
            spec, self._model, stream=stream, steered=steered, sentinel=self._sentinel
        )
        return payload, needs

    def _cut(self, choice: Mapping[str, Any], spec: SamplingSpec) -> ChoiceTokens:
        """One choice's ids, logprobs and stop reason, a segment cut as the local engine's."""
        sentinel = self._sentinel if spec.segment is not None else None
        return choice_tokens(choice, spec.logprobs, sentinel)

    async def generate(self, spec: SamplingSpec) -> Generation:
        payload, needs = self._payload(spec, stream=False)
        self._in_flight += 1
        try:
            body = await self._post("/v1/completions", payload, needs)
        finally:
            self._in_flight -= 1
        return await self._generation(body, spec)

    async def _generation(self, body: Mapping[str, Any], spec: SamplingSpec) -> Generation:
        choices = sorted(body.get("choices") or [], key=lambda c: int(c["index"]))
        if not choices:
            raise EngineError("remote vLLM returned no choices")
        cuts = [self._cut(c, spec) for c in choices]
        first = choices[0]
        wanted = itertools.chain(
            (tid for _, raw, _ in cuts for entry in raw or [] for tid in entry.ids()),
            prompt_ids_without_text(first) if spec.prompt_logprobs is not None else (),
        )
        texts = await self.texts.lookup(wanted)
        prompt_ids = [int(t) for t in first.get("prompt_token_ids") or []]
        completions = [
            Completion(
                index=int(c["index"]),
                text=c.get("text") or "",
                token_ids=ids,
                finish_reason=c.get("finish_reason"),
                stop_reason=stop_reason,
                logprobs=None if raw is None else [entry.with_texts(texts) for entry in raw],
                unseen_tokens=len(c.get("token_ids") or []) - len(ids),  # a cut's sentinel
            )
            for c, (ids, raw, stop_reason) in zip(choices, cuts, strict=True)
        ]
        prompt_logprobs = None
        if spec.prompt_logprobs is not None and first.get("prompt_logprobs") is not None:
            prompt_logprobs = [
                prompt_logprob(tid, entry, spec.prompt_logprobs, texts)
                for tid, entry in zip(prompt_ids, first["prompt_logprobs"], strict=False)
            ]
        return Generation(
            prompt_token_ids=prompt_ids,
            completions=completions,
            cached_prompt_tokens=cached_tokens(body.get("usage")),
            prompt_logprobs=prompt_logprobs,
        )

    async def stream(self, spec: SamplingSpec) -> AsyncIterator[StreamEvent]:
        payload, needs = self._payload(spec, stream=True)
        self._in_flight += 1
        try:
            response = await self._send(
                "POST", "/v1/completions", payload, stream=True, needs=needs
            )
            try:
                await raise_for_status(response)
                async with aclosing(self._events(response, spec)) as events:
                    async for event in events:
                        yield event
            except httpx.TransportError as exc:
                raise EngineUnavailable(
                    f"lost the stream from {origin(response)}: {exc!r}"
                ) from exc
            finally:
                await response.aclose()  # early close: vLLM sees the disconnect and aborts
        finally:
            self._in_flight -= 1

    async def _events(
        self, response: httpx.Response, spec: SamplingSpec
    ) -> AsyncIterator[StreamEvent]:
        """One event per chunk; vLLM sends the prompt ids with each index's first chunk only."""
        prompt_ids: list[int] = []
        async with aclosing(sse_events(response)) as chunks:
            async for chunk in chunks:
                deltas = []
                for choice in chunk.get("choices") or []:
                    if not prompt_ids and choice.get("prompt_token_ids"):
                        prompt_ids = [int(t) for t in choice["prompt_token_ids"]]
                    deltas.append(await self._delta(choice, spec))
                if deltas:
                    yield StreamEvent(prompt_token_ids=prompt_ids, deltas=deltas)

    async def _delta(self, choice: Mapping[str, Any], spec: SamplingSpec) -> CompletionDelta:
        ids, raw, stop_reason = self._cut(choice, spec)
        logprobs = None
        if raw is not None:
            texts = await self.texts.lookup(tid for entry in raw for tid in entry.ids())
            logprobs = [entry.with_texts(texts) for entry in raw]
        return CompletionDelta(
            index=int(choice["index"]),
            text=choice.get("text") or "",
            token_ids=ids,
            finish_reason=choice.get("finish_reason"),
            stop_reason=stop_reason,
            logprobs=logprobs,
        )

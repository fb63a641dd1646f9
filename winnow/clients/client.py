"""Typed clients for winnow (and any OpenAI-compatible server): async and sync, over httpx.

They sit beside the official ``openai`` SDK, which works unchanged against winnow; these add
typed access to winnow's own fields (``usage.winnow``, ``winnow``, ``strategy``)::

    async with AsyncWinnowClient("http://127.0.0.1:8000/v1") as client:
        r = await client.chat(
            [{"role": "user", "content": "2 + 2 ="}],
            max_tokens=16,
            strategy=Strategy(name="best_of_n", params={"n": 8}),
        )
        print(r.choices[0].message.content, r.usage.winnow.generated_tokens)

Any field the keyword arguments do not name goes through ``extra_body`` (merged last).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypedDict, TypeVar

import httpx
from pydantic import BaseModel
from typing_extensions import Unpack

from winnow.clients.errors import WinnowAPIError, WinnowConnectionError, api_error
from winnow.clients.types import (
    ChatCompletionChunk,
    ChatCompletionResponse,
    CompletionChunk,
    CompletionResponse,
    ModelList,
    StrategyInfo,
    StrategyLike,
)
from winnow.clients.wire import aiter_events, endpoint_path, iter_events, request_body, root_url

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
M = TypeVar("M", bound=BaseModel)
Prompt = str | list[str] | list[int] | list[list[int]]
Message = Mapping[str, Any]


class RequestArgs(TypedDict, total=False):
    """Keyword arguments of the completion calls; ``None`` values are not sent."""

    model: str
    max_tokens: int
    max_completion_tokens: int  # chat only
    temperature: float
    top_p: float
    n: int
    stop: str | list[str]
    seed: int
    logprobs: int | bool  # an int (top-k) on completions, a bool on chat
    top_logprobs: int  # chat only
    echo: bool  # completions only
    presence_penalty: float
    frequency_penalty: float
    user: str
    top_k: int
    min_p: float
    repetition_penalty: float
    stop_token_ids: list[int]
    ignore_eos: bool
    strategy: StrategyLike
    include_usage: bool  # streaming: ask for the final usage chunk (default True)
    extra_body: Mapping[str, Any]


def _prepare(
    endpoint: Literal["completions", "chat"],
    payload: dict[str, Any],
    args: RequestArgs,
    stream: bool,
) -> tuple[str, dict[str, Any]]:
    fields: dict[str, Any] = {**payload, **args}
    strategy = fields.pop("strategy", None)
    extra = fields.pop("extra_body", None)
    include_usage = fields.pop("include_usage", True)
    body = request_body(
        fields, strategy=strategy, stream=stream, include_usage=include_usage, extra_body=extra
    )
    return endpoint_path(endpoint), body


def _headers(api_key: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    out = {"Accept": "application/json", **(headers or {})}
    key = api_key if api_key is not None else os.environ.get("WINNOW_API_KEY")
    if key:
        out["Authorization"] = f"Bearer {key}"
    return out


def _parse(model: type[M], response: httpx.Response) -> M:
    if response.status_code >= 400:
        raise api_error(response.status_code, response.content)
    return model.model_validate(response.json())


def _strategy_list(response: httpx.Response) -> list[StrategyInfo]:
    if response.status_code >= 400:
        raise api_error(response.status_code, response.content)
    return [StrategyInfo.model_validate(s) for s in response.json().get("data", [])]


class _Config:
    """What both clients are made of: the base URL, headers and timeout."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: float | httpx.Timeout | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = _headers(api_key, headers)
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def health_url(self) -> str:
        return root_url(self.base_url) + "/health"


class AsyncWinnowClient:
    """Async client. Use as ``async with``; pass ``http_client`` to share a pool (not closed)."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = 600.0,
        *,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._cfg = _Config(base_url, api_key, timeout, headers)
        self._owned = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=self._cfg.timeout)

    @property
    def base_url(self) -> str:
        return self._cfg.base_url

    async def __aenter__(self) -> AsyncWinnowClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    async def _request(self, method: str, url: str, body: Any = None) -> httpx.Response:
        try:
            return await self._http.request(method, url, json=body, headers=self._cfg.headers)
        except httpx.TransportError as exc:
            raise WinnowConnectionError(f"{method} {url}: {exc!r}") from exc

    async def _post(self, model: type[M], path: str, body: dict[str, Any]) -> M:
        return _parse(model, await self._request("POST", self._cfg.url(path), body))

    async def _stream(self, model: type[M], path: str, body: dict[str, Any]) -> AsyncIterator[M]:
        url = self._cfg.url(path)
        try:
            async with self._http.stream("POST", url, json=body, headers=self._cfg.headers) as r:
                if r.status_code >= 400:
                    raise api_error(r.status_code, await r.aread())
                async for event in aiter_events(r.aiter_lines()):
                    yield model.model_validate(event)
        except httpx.TransportError as exc:
            raise WinnowConnectionError(f"POST {url}: {exc!r}") from exc

    async def completions(self, prompt: Prompt, **args: Unpack[RequestArgs]) -> CompletionResponse:
        """``POST /v1/completions``."""
        path, body = _prepare("completions", {"prompt": prompt}, args, stream=False)
        return await self._post(CompletionResponse, path, body)

    async def chat(
        self, messages: Sequence[Message], **args: Unpack[RequestArgs]
    ) -> ChatCompletionResponse:
        """``POST /v1/chat/completions``."""
        path, body = _prepare("chat", {"messages": list(messages)}, args, stream=False)
        return await self._post(ChatCompletionResponse, path, body)

    def stream_completions(
        self, prompt: Prompt, **args: Unpack[RequestArgs]
    ) -> AsyncIterator[CompletionChunk]:
        """Streamed completions; the last chunk carries ``usage`` unless ``include_usage=False``."""
        path, body = _prepare("completions", {"prompt": prompt}, args, stream=True)
        return self._stream(CompletionChunk, path, body)

    def stream_chat(
        self, messages: Sequence[Message], **args: Unpack[RequestArgs]
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Streamed chat; the last chunk carries ``usage`` unless ``include_usage=False``."""
        path, body = _prepare("chat", {"messages": list(messages)}, args, stream=True)
        return self._stream(ChatCompletionChunk, path, body)

    async def models(self) -> ModelList:
        return _parse(ModelList, await self._request("GET", self._cfg.url("/models")))

    async def strategies(self) -> list[StrategyInfo]:
        """Every strategy the server offers, with its parameters as JSON Schema (winnow only)."""
        return _strategy_list(await self._request("GET", self._cfg.url("/strategies")))

    async def health(self) -> bool:
        """True when the server and its engine answer (``GET /health`` is 200), else False."""
        return (await self._request("GET", self._cfg.health_url)).status_code == 200


class WinnowClient:
    """The synchronous twin of :class:`AsyncWinnowClient`. Use as ``with``."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = 600.0,
        *,
        headers: Mapping[str, str] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._cfg = _Config(base_url, api_key, timeout, headers)
        self._owned = http_client is None
        self._http = http_client or httpx.Client(timeout=self._cfg.timeout)

    @property
    def base_url(self) -> str:
        return self._cfg.base_url

    def __enter__(self) -> WinnowClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def _request(self, method: str, url: str, body: Any = None) -> httpx.Response:
        try:
            return self._http.request(method, url, json=body, headers=self._cfg.headers)
        except httpx.TransportError as exc:
            raise WinnowConnectionError(f"{method} {url}: {exc!r}") from exc

    def _post(self, model: type[M], path: str, body: dict[str, Any]) -> M:
        return _parse(model, self._request("POST", self._cfg.url(path), body))

    def _stream(self, model: type[M], path: str, body: dict[str, Any]) -> Iterator[M]:
        url = self._cfg.url(path)
        try:
            with self._http.stream("POST", url, json=body, headers=self._cfg.headers) as r:
                if r.status_code >= 400:
                    raise api_error(r.status_code, r.read())
                for event in iter_events(r.iter_lines()):
                    yield model.model_validate(event)
        except httpx.TransportError as exc:
            raise WinnowConnectionError(f"POST {url}: {exc!r}") from exc

    def completions(self, prompt: Prompt, **args: Unpack[RequestArgs]) -> CompletionResponse:
        """``POST /v1/completions``."""
        path, body = _prepare("completions", {"prompt": prompt}, args, stream=False)
        return self._post(CompletionResponse, path, body)

    def chat(
        self, messages: Sequence[Message], **args: Unpack[RequestArgs]
    ) -> ChatCompletionResponse:
        """``POST /v1/chat/completions``."""
        path, body = _prepare("chat", {"messages": list(messages)}, args, stream=False)
        return self._post(ChatCompletionResponse, path, body)

    def stream_completions(
        self, prompt: Prompt, **args: Unpack[RequestArgs]
    ) -> Iterator[CompletionChunk]:
        """Streamed completions; the last chunk carries ``usage`` unless ``include_usage=False``."""
        path, body = _prepare("completions", {"prompt": prompt}, args, stream=True)
        return self._stream(CompletionChunk, path, body)

    def stream_chat(
        self, messages: Sequence[Message], **args: Unpack[RequestArgs]
    ) -> Iterator[ChatCompletionChunk]:
        """Streamed chat; the last chunk carries ``usage`` unless ``include_usage=False``."""
        path, body = _prepare("chat", {"messages": list(messages)}, args, stream=True)
        return self._stream(ChatCompletionChunk, path, body)

    def models(self) -> ModelList:
        return _parse(ModelList, self._request("GET", self._cfg.url("/models")))

    def strategies(self) -> list[StrategyInfo]:
        """Every strategy the server offers, with its parameters as JSON Schema (winnow only)."""
        return _strategy_list(self._request("GET", self._cfg.url("/strategies")))

    def health(self) -> bool:
        """True when the server and its engine answer (``GET /health`` is 200), else False."""
        return self._request("GET", self._cfg.health_url).status_code == 200


__all__ = [
    "DEFAULT_BASE_URL",
    "AsyncWinnowClient",
    "RequestArgs",
    "WinnowAPIError",
    "WinnowClient",
    "WinnowConnectionError",
]

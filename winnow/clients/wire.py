"""What the client and the load generator share: request bodies, URLs and SSE parsing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from winnow.clients.errors import WinnowAPIError, stream_error
from winnow.clients.types import StrategyLike, strategy_wire

DONE = "[DONE]"


def merge_body(body: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """``body`` updated with ``extra`` (shallow, ``extra`` wins), as vLLM's ``--extra-body``."""
    merged = dict(body)
    if extra:
        merged.update(extra)
    return merged


def request_body(
    fields: Mapping[str, Any],
    *,
    strategy: StrategyLike | None = None,
    stream: bool = False,
    include_usage: bool = True,
    extra_body: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A completions / chat body: the given fields without the ``None`` ones, then winnow's."""
    body = {k: v for k, v in fields.items() if v is not None}
    if strategy is not None:
        body["strategy"] = strategy_wire(strategy)
    if stream:
        body["stream"] = True
        if include_usage:
            body["stream_options"] = {"include_usage": True}
    return merge_body(body, extra_body)


def root_url(base_url: str) -> str:
    """The server root of an OpenAI base URL (``/health`` lives there, not under ``/v1``)."""
    base = base_url.rstrip("/")
    return base.removesuffix("/v1")


def endpoint_path(endpoint: str) -> str:
    """``completions`` or ``chat`` -> the path under the base URL."""
    paths = {"completions": "/completions", "chat": "/chat/completions"}
    try:
        return paths[endpoint]
    except KeyError:
        raise ValueError(f"endpoint must be one of {sorted(paths)}, not {endpoint!r}") from None


def sse_data(line: str) -> str | None:
    """The payload of one SSE line, or ``None`` for blank lines, comments and other fields."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def parse_event(data: str) -> dict[str, Any]:
    """One event as a dict; an error event raises :class:`WinnowAPIError`."""
    try:
        event = json.loads(data)
    except ValueError:
        raise WinnowAPIError(502, f"malformed stream event: {data[:200]!r}") from None
    if not isinstance(event, dict):
        raise WinnowAPIError(502, f"malformed stream event: {data[:200]!r}")
    if (error := stream_error(event)) is not None:
        raise error
    return event


def iter_events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The events of an SSE stream, up to ``[DONE]``."""
    for line in lines:
        data = sse_data(line)
        if data is None or not data:
            continue
        if data == DONE:
            return
        yield parse_event(data)


async def aiter_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The events of an SSE stream, up to ``[DONE]`` (async)."""
    async for line in lines:
        data = sse_data(line)
        if data is None or not data:
            continue
        if data == DONE:
            return
        yield parse_event(data)

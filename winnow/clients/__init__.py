"""Clients of winnow: a typed client (async and sync) and the load generator.

``from winnow.clients import AsyncWinnowClient, WinnowClient, Strategy`` for the client;
:mod:`winnow.clients.bench` for ``winnow bench serve``. Names are imported on first use, so
``winnow --help`` does not pay for httpx and the wire models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from winnow.clients.client import AsyncWinnowClient, RequestArgs, WinnowClient
    from winnow.clients.errors import WinnowAPIError, WinnowConnectionError, WinnowError
    from winnow.clients.types import (
        ChatCompletionChunk,
        ChatCompletionResponse,
        CompletionChunk,
        CompletionResponse,
        ModelList,
        Strategy,
        StrategyInfo,
        Usage,
        WinnowInfo,
        WinnowUsage,
    )

_WHERE = {
    "AsyncWinnowClient": "client",
    "WinnowClient": "client",
    "RequestArgs": "client",
    "WinnowAPIError": "errors",
    "WinnowConnectionError": "errors",
    "WinnowError": "errors",
    "ChatCompletionChunk": "types",
    "ChatCompletionResponse": "types",
    "CompletionChunk": "types",
    "CompletionResponse": "types",
    "ModelList": "types",
    "Strategy": "types",
    "StrategyInfo": "types",
    "Usage": "types",
    "WinnowInfo": "types",
    "WinnowUsage": "types",
}
__all__ = [
    "AsyncWinnowClient",
    "ChatCompletionChunk",
    "ChatCompletionResponse",
    "CompletionChunk",
    "CompletionResponse",
    "ModelList",
    "RequestArgs",
    "Strategy",
    "StrategyInfo",
    "Usage",
    "WinnowAPIError",
    "WinnowClient",
    "WinnowConnectionError",
    "WinnowError",
    "WinnowInfo",
    "WinnowUsage",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'winnow.clients' has no attribute {name!r}")
    return getattr(importlib.import_module(f"winnow.clients.{_WHERE[name]}"), name)

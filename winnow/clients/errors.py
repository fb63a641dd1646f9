"""Client errors: an HTTP error parsed from OpenAI's error body, or a transport failure."""

from __future__ import annotations

import json
from typing import Any

# winnow's error types by status (winnow/server/errors.py), used backwards for mid-stream errors,
# which arrive in a 200 response and carry no status of their own.
_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "server_error": 500,
    "service_unavailable_error": 503,
    "timeout_error": 504,
}


class WinnowError(Exception):
    """Base class of every error the client raises."""


class WinnowConnectionError(WinnowError):
    """The server could not be reached, or the connection broke or timed out."""


class WinnowAPIError(WinnowError):
    """The server answered with an error (OpenAI's ``{"error": {...}}`` body)."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str | None = None,
        param: str | None = None,
        code: str | int | None = None,
    ) -> None:
        super().__init__(f"{status} {type or 'error'}: {message}")
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code


def _detail(body: Any) -> dict[str, Any] | None:
    """The error object of OpenAI's body, or of vLLM's older flat ``{"object": "error"}`` body."""
    if not isinstance(body, dict):
        return None
    if isinstance(error := body.get("error"), dict):
        return error
    if body.get("object") == "error" and "message" in body:
        return body
    return None


def api_error(status: int, body: bytes | str | Any) -> WinnowAPIError:
    """Build the error from a response body; a non-JSON body becomes the message as is."""
    data = body
    if isinstance(body, bytes | str):
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        try:
            data = json.loads(text)
        except ValueError:
            return WinnowAPIError(status, text.strip()[:2000] or f"HTTP {status}")
    detail = _detail(data)
    if detail is None:
        return WinnowAPIError(status, json.dumps(data)[:2000])
    return WinnowAPIError(
        status,
        str(detail.get("message", "")),
        detail.get("type"),
        detail.get("param"),
        detail.get("code"),
    )


def stream_error(data: dict[str, Any]) -> WinnowAPIError | None:
    """The error carried by a streamed event, if it is one."""
    detail = _detail(data)
    if detail is None:
        return None
    status = _STATUS_BY_TYPE.get(str(detail.get("type")), 500)
    return api_error(status, data)

"""An honest OpenAPI schema: the errors the server really sends, and its real content types.

FastAPI documents a 422 ``HTTPValidationError`` for every body, but winnow answers invalid input
with OpenAI's error body and a 400; it also sends 401/404/413/429/5xx, streams SSE when
``stream`` is true, and serves /metrics as Prometheus text. The fuzz tests
(tests/unit/test_api_fuzz.py) check every response against this schema.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from winnow.protocol.responses import ErrorResponse

_ERRORS = {
    "400": "Invalid request (OpenAI error body; `param` names the field).",
    "401": "Missing or invalid API key (when the server has one).",
    "404": "Unknown model.",
    "413": "Request body too large.",
    "429": "Server at capacity; retry after `Retry-After` seconds.",
    "500": "A strategy or reward backend failed.",
    "502": "The engine failed to serve the call.",
    "503": "Engine unavailable, or the server is shutting down.",
    "504": "The request (or a reward call) exceeded its wall time.",
}
_BODY_ERRORS = ("400", "401", "404", "413", "429", "500", "502", "503", "504")
_GET_ERRORS = ("401",)
_SSE = {  # OpenAPI < 3.2: `schema` describes one event
    "schema": {
        "type": "object",
        "description": "One server-sent event; the stream ends with `data: [DONE]`.",
        "properties": {
            "data": {
                "type": "string",
                "description": "A JSON chunk (the response's shape, with deltas), an in-band "
                "OpenAI error object once the stream has begun, or [DONE].",
            }
        },
        "required": ["data"],
    }
}


def install(app: FastAPI) -> None:
    """Replace ``app.openapi`` with a generator that post-processes FastAPI's schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            FastAPI.openapi(app)
            _patch(app.openapi_schema or {})
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }


def _patch(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error.pop("$defs", {}))
    components["ErrorResponse"] = error
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    strategy = _strategy_schema(components)
    for request in ("CompletionRequest", "ChatCompletionRequest"):
        properties = components.get(request, {}).get("properties", {})
        if "strategy" in properties:
            description = properties["strategy"].get("description", "")
            properties["strategy"] = {**strategy, "description": description}
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            if "requestBody" in op:
                codes = _BODY_ERRORS
            elif path.startswith("/v1/"):
                codes = _GET_ERRORS
            else:
                codes = ()
            for code in codes:
                responses.setdefault(code, _error(_ERRORS[code]))
            if path in ("/v1/completions", "/v1/chat/completions") and method == "post":
                responses["200"].setdefault("content", {})["text/event-stream"] = _SSE
    health = schema.get("paths", {}).get("/health", {}).get("get")
    if health is not None:
        health["responses"]["503"] = _error(_ERRORS["503"])
    metrics = schema.get("paths", {}).get("/metrics", {}).get("get")
    if metrics is not None:
        metrics["responses"]["200"]["content"] = {
            "text/plain": {"schema": {"type": "string", "description": "Prometheus text format."}}
        }


def _strategy_schema(components: dict[str, Any]) -> dict[str, Any]:
    """The ``strategy`` field as it is validated: a registered name, or an object with ``name``
    and exactly that strategy's parameters (each parameter model forbids unknown fields)."""
    from winnow import strategies

    names = strategies.names()
    variants: list[dict[str, Any]] = [{"type": "string", "enum": names}]
    for name in names:
        params = strategies.get(name).params.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components.update(params.pop("$defs", {}))
        params["properties"] = {
            "name": {"type": "string", "const": name},
            **params.get("properties", {}),
        }
        params["required"] = ["name", *params.get("required", [])]
        params["title"] = f"strategy {name}"
        variants.append(params)
    variants.append({"type": "null"})
    return {"anyOf": variants}

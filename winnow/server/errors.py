"""One place that turns every failure into OpenAI's error body with the right status."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from winnow.engine.base import EngineError, EngineRequestError, EngineUnavailable
from winnow.metering.usage import TokenBudgetExceeded
from winnow.protocol.responses import ErrorDetail, ErrorResponse
from winnow.rewards.base import RewardError, RewardInputError, RewardTimeout
from winnow.rewards.registry import UnknownReward
from winnow.server.redaction import redact_urls
from winnow.strategies.registry import StrategyError

log = logging.getLogger("winnow.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class APIError(Exception):
    """An error with an HTTP status, raised anywhere on the request path."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict:
    """OpenAI's error body; URLs in the message lose their credentials and queries (an engine's
    message may name a remote server's URL, see :mod:`winnow.server.redaction`)."""
    detail = ErrorDetail(
        message=redact_urls(message),
        type=_TYPES.get(status, "server_error"),
        param=param,
        code=code,
    )
    return ErrorResponse(error=detail).model_dump()


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.status, exc.message, exc.param, exc.code),
        status_code=exc.status,
        headers=exc.headers,
    )


def _union_label(part: str) -> bool:
    """Whether a location part is pydantic's label of a union branch ("str", "list[int]",
    "constrained-str"), not a field name."""
    return any(c in part for c in "[]-") or part in {"str", "int", "float", "bool", "dict"}


def _first_error(errors: list[Any]) -> Any:
    """The error to report: the first field's; of a union's branches (each reports one), a
    broken bound ("at most 256 characters") before a wrong type ("should be a valid list"), and
    the branch that got furthest into the value."""
    field = errors[0].get("loc", ())[:2]
    same = [e for e in errors if e.get("loc", ())[:2] == field]
    return min(
        same,
        key=lambda e: (str(e.get("type", "")).endswith("_type"), -len(e.get("loc", ()))),
    )


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    err = _first_error(list(errors))
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    # drop pydantic's union-branch labels like "str" / "list[int]" from the location
    param = ".".join(p for p in loc if not _union_label(p))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if err.get("type") == "json_invalid":
        return f"request body is not valid JSON: {msg}", None
    if err.get("type") == "missing":
        return f"missing required parameter: {param}", param or None
    return f"invalid parameter {param}: {msg}" if param else msg, param or None


def as_api_error(exc: BaseException) -> APIError:
    """The error a client sees for ``exc`` (the handlers below and in-band stream errors)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, StrategyError):
        return APIError(400, str(exc), exc.param, "invalid_strategy")
    if isinstance(exc, UnknownReward):
        return APIError(400, str(exc), "reward", "unknown_reward")
    if isinstance(exc, RewardInputError):
        return APIError(400, str(exc), "reward", "invalid_reward_input")
    if isinstance(exc, RewardTimeout):
        return APIError(504, str(exc), "reward", "reward_timeout")
    if isinstance(exc, RewardError):
        return APIError(500, str(exc), "reward", "reward_error")
    if isinstance(exc, TokenBudgetExceeded):
        return APIError(500, str(exc), "strategy", "token_budget_exceeded")
    if isinstance(exc, EngineRequestError):
        return APIError(400, f"the engine refused the request: {exc}")
    if isinstance(exc, EngineUnavailable):
        return APIError(503, f"engine unavailable: {exc}", code="engine_unavailable")
    if isinstance(exc, EngineError):
        return APIError(502, f"engine error: {exc}", code="engine_error")
    return APIError(500, f"internal error ({type(exc).__name__}); see the server log")


def status_for(exc: BaseException) -> int:
    """The HTTP status an exception turns into (for metrics; the handlers below agree)."""
    if isinstance(exc, APIError):
        return exc.status
    if isinstance(exc, RewardTimeout):
        return 504
    if isinstance(exc, StrategyError | UnknownReward | RewardInputError | EngineRequestError):
        return 400
    if isinstance(exc, EngineUnavailable):
        return 503
    if isinstance(exc, EngineError):
        return 502
    return 500


_ENDPOINTS = {  # the metrics' (endpoint, strategy) labels of a body refused by validation
    "/v1/completions": ("completions", "unknown"),
    "/v1/chat/completions": ("chat", "unknown"),
    "/v1/rewards": ("rewards", "rewards"),
}


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StrategyError)
    async def _strategy_error(request: Request, exc: StrategyError) -> JSONResponse:
        return error_response(APIError(400, str(exc), exc.param, "invalid_strategy"))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        state = getattr(request.app.state, "winnow", None)
        labels = _ENDPOINTS.get(request.url.path)
        if state is not None and labels is not None:
            state.metrics.requests.labels(*labels, "400").inc()
        return error_response(APIError(400, message, param, "invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        try:  # `code in HTTPStatus` raises TypeError on Python 3.11: every 404/405 was a 500
            phrase = HTTPStatus(exc.status_code).phrase
        except ValueError:
            phrase = "error"
        message = exc.detail if isinstance(exc.detail, str) else phrase
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette lists only the first matching route's methods
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return error_response(APIError(exc.status_code, message, headers=headers or None))

    @app.exception_handler(UnknownReward)
    async def _unknown_reward(request: Request, exc: UnknownReward) -> JSONResponse:
        return error_response(APIError(400, str(exc), "reward", "unknown_reward"))

    @app.exception_handler(RewardInputError)
    async def _reward_input(request: Request, exc: RewardInputError) -> JSONResponse:
        return error_response(APIError(400, str(exc), "reward", "invalid_reward_input"))

    @app.exception_handler(RewardTimeout)
    async def _reward_timeout(request: Request, exc: RewardTimeout) -> JSONResponse:
        log.error("%s", redact_urls(str(exc)))
        return error_response(as_api_error(exc))

    @app.exception_handler(RewardError)
    async def _reward_failed(request: Request, exc: RewardError) -> JSONResponse:
        log.error("%s", redact_urls(str(exc)))
        return error_response(APIError(500, str(exc), "reward", "reward_error"))

    @app.exception_handler(EngineRequestError)
    async def _engine_request(request: Request, exc: EngineRequestError) -> JSONResponse:
        return error_response(APIError(400, f"the engine refused the request: {exc}"))

    @app.exception_handler(EngineUnavailable)
    async def _unavailable(request: Request, exc: EngineUnavailable) -> JSONResponse:
        return error_response(
            APIError(503, f"engine unavailable: {exc}", code="engine_unavailable")
        )

    @app.exception_handler(EngineError)
    async def _engine(request: Request, exc: EngineError) -> JSONResponse:
        log.error("engine error: %s", redact_urls(str(exc)))
        return error_response(APIError(502, f"engine error: {exc}", code="engine_error"))

    @app.exception_handler(TokenBudgetExceeded)
    async def _over_budget(request: Request, exc: TokenBudgetExceeded) -> JSONResponse:
        log.error("%s", exc)
        return error_response(APIError(500, str(exc), "strategy", "token_budget_exceeded"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(
            APIError(500, f"internal error ({type(exc).__name__}); see the server log")
        )

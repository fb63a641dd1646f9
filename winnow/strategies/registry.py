"""Strategies by name: each module registers its run function and its parameter model.

A new strategy plugs in by decorating its function with :func:`register` and being imported in
:mod:`winnow.strategies`; the server never changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from winnow.strategies.base import StrategyFn, StrategyParams


@dataclass(frozen=True, slots=True)
class StrategyEntry:
    name: str
    run: StrategyFn
    params: type[StrategyParams]
    streams: bool  # sends tokens as they are generated, not only the chosen answer
    summary: str


class StrategyError(ValueError):
    """A request's ``strategy`` object is invalid; ``param`` names the offending field."""

    def __init__(self, message: str, param: str = "strategy") -> None:
        super().__init__(message)
        self.param = param


_REGISTRY: dict[str, StrategyEntry] = {}


def register(
    name: str, params: type[StrategyParams], *, streams: bool = False
) -> Callable[[StrategyFn], StrategyFn]:
    def decorate(fn: StrategyFn) -> StrategyFn:
        if name in _REGISTRY:
            raise RuntimeError(f"strategy {name!r} registered twice")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        _REGISTRY[name] = StrategyEntry(name, fn, params, streams, summary)
        return fn

    return decorate


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> StrategyEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise StrategyError(
            f"unknown strategy {name!r}; accepted: {', '.join(names())}", "strategy.name"
        ) from None


def parse(spec: str | dict[str, Any] | None) -> tuple[StrategyEntry, StrategyParams]:
    """Resolve a request's ``strategy`` field (absent, a name, or an object with ``name``).

    Parameters are validated strictly (``true`` is not 1, ``0`` is not false, ``"4"`` is not 4),
    as the schema states them. Nothing here reads the text of a parameter: this runs on the
    event loop before admission. ``reference`` is checked after admission, in a worker process
    (:mod:`winnow.server.references`)."""
    if spec is None:
        spec = {"name": "sample"}
    elif isinstance(spec, str):
        spec = {"name": spec}
    fields = dict(spec)
    name = fields.pop("name", None)
    if not isinstance(name, str):
        raise StrategyError(
            f"strategy.name is required; accepted: {', '.join(names())}", "strategy.name"
        )
    entry = get(name)
    try:
        params = entry.params.model_validate(fields, strict=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        accepted = ", ".join(entry.params.model_fields) or "none"
        raise StrategyError(
            f"invalid parameter strategy.{loc} for strategy {name!r}: {err['msg']}; "
            f"parameters of {name!r}: {accepted}",
            f"strategy.{loc}",
        ) from None
    return entry, params

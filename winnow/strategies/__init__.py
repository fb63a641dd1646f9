"""Decoding strategies, one module each, registered by name (see :mod:`.registry`)."""

from winnow.strategies import sample  # noqa: F401  (registers "sample")
from winnow.strategies.registry import get, names, parse

__all__ = ["get", "names", "parse"]

"""Decoding strategies, one module each, registered by name (see :mod:`.registry`)."""

from winnow.strategies import (  # noqa: F401  (registration)
    adaptive,
    best_of_majority,
    best_of_n,
    cards,
    deepconf,
    sample,
    speculative,
    tree_search,
    vas,
)
from winnow.strategies.registry import get, names, parse

__all__ = ["get", "names", "parse"]

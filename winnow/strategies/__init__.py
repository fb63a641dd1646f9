"""Decoding strategies, one module each, registered by name (see :mod:`.registry`)."""

from winnow.strategies import best_of_majority, best_of_n, sample  # noqa: F401  (registration)
from winnow.strategies import tree_search  # noqa: F401  (registration)
from winnow.strategies import cards  # noqa: F401  (registration)
from winnow.strategies import vas  # noqa: F401  (registration)
from winnow.strategies.registry import get, names, parse

__all__ = ["get", "names", "parse"]

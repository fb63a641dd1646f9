"""Functions for tests/test_answer_bounds.py to run in winnow.answers.sandbox workers."""

from __future__ import annotations


def echo(x: object) -> object:
    return x


def spin() -> None:
    """A big-integer power that holds the GIL for minutes (what froze the server)."""
    _ = 10 ** (10**9)


def allocate(mib: int) -> int:
    return len(bytearray(mib << 20))


def fail() -> None:
    raise ValueError("asked to fail")

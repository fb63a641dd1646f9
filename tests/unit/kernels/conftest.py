"""Kernel tests run the Triton kernels through Triton's CPU interpreter.

Triton reads ``TRITON_INTERPRET`` in two places: ``triton.jit`` when it decorates a function, and
so ``triton.language``'s own helpers (``tl.sum``, ``tl.zeros``...) when triton is first imported.
winnow's kernels are decorated at launch (``winnow.kernels._triton.LazyKernel``) and run
compile-mode helpers through the interpreter, so the ``triton_interpret`` fixture can set the
variable per test, whoever imported torch or triton first. Ahead-of-time compilation, on the other
hand, needs triton imported *without* it: it is removed here, before triton is imported, in case
pytest was started with ``TRITON_INTERPRET=1``.

Triton is a hard requirement of these tests: if it cannot be imported they error, never skip.
"""

from __future__ import annotations

import os
import sys

import pytest

if "triton" not in sys.modules:
    os.environ.pop("TRITON_INTERPRET", None)

import torch
import triton  # noqa: F401  (a missing triton must fail the kernel tests, not skip them)

from winnow.kernels import dispatch


@pytest.fixture
def triton_interpret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run Triton launches in this test through the CPU interpreter."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _no_forced_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from the default backend choice and undo any force_backend() call."""
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    monkeypatch.setattr(dispatch, "_forced", None)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)

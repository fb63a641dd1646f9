"""Guarded Triton import and launch-time kernel decoration.

``triton.jit`` chooses between compiling and interpreting when it *decorates* a function, by
reading ``TRITON_INTERPRET`` at that moment. The kernels here are decorated on their first launch
instead (:class:`LazyKernel`), in the mode asked for at that launch, so that:

* ``import winnow.kernels`` works without Triton installed (the torch references still do);
* tests can set ``TRITON_INTERPRET=1`` after torch, triton (vLLM imports it) or this package
  were imported;
* ahead-of-time compilation always gets a real ``JITFunction``, even while interpreting.

The interpreter path leans on two private pieces of Triton (``_patch_lang`` and the
``JITFunction.__call__`` it replaces during a launch); the kernel tests exercise it on every run.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the torch references work without Triton
    triton = None
    tl = None

__all__ = [
    "KernelSpec",
    "LazyKernel",
    "block_size",
    "cdiv",
    "device_function",
    "device_guard",
    "interpreting",
    "lazy_jit",
    "require_launchable",
    "tl",
    "triton",
    "triton_available",
]


def triton_available() -> bool:
    """Whether the ``triton`` package could be imported."""
    return triton is not None


def interpreting() -> bool:
    """Whether Triton would run kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return triton is not None and bool(triton.knobs.runtime.interpret)


def require_launchable(device: torch.device) -> None:
    """Raise a clear error unless a Triton kernel can run on tensors of ``device``."""
    if triton is None:
        raise RuntimeError(
            "the triton backend needs the `triton` package, which is not installed; "
            "use the torch backend (WINNOW_KERNELS=torch or auto)"
        )
    if device.type != "cuda" and not interpreting():
        raise RuntimeError(
            f"Triton kernels run on CUDA tensors, got tensors on {device.type!r}. "
            "Set TRITON_INTERPRET=1 to run them through Triton's CPU interpreter (slow, for "
            "tests), or use the torch backend (WINNOW_KERNELS=torch or auto)."
        )


def device_guard(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Make ``device`` current during a launch (Triton launches on the current CUDA device)."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for positive ``b``."""
    return -(-a // b)


def block_size(n: int, low: int, high: int | None = None) -> int:
    """The power of two that covers ``n``, clamped to ``[low, high]`` (no upper bound if None).

    A block dimension that must cover a whole axis in one tile (head outputs, labels) gets no
    upper bound: correct for any size, fast for the small sizes that occur.
    """
    size = max(low, triton.next_power_of_2(max(n, 1)))
    return size if high is None else min(size, high)


class LazyKernel:
    """A Triton kernel function, decorated on first use in the mode then in force."""

    def __init__(self, fn: Callable[..., None]) -> None:
        self.fn = fn
        self._decorated: dict[bool, Any] = {}

    def __getitem__(self, grid: tuple[int, ...]) -> Callable[..., Any]:
        interpret = interpreting()
        launch = self.decorated(interpret=interpret)[grid]
        if not interpret:
            return launch

        def interpreted_launch(*args: Any, **kwargs: Any) -> Any:
            with _INTERPRETER_LOCK, _interpret_compiled_helpers():
                return launch(*args, **kwargs)

        return interpreted_launch

    def decorated(self, *, interpret: bool) -> Any:
        """The ``InterpretedFunction`` or ``JITFunction`` wrapping this kernel, cached per mode."""
        if interpret not in self._decorated:
            from triton.runtime.interpreter import InterpretedFunction
            from triton.runtime.jit import JITFunction

            kind = InterpretedFunction if interpret else JITFunction
            self._decorated[interpret] = kind(self.fn)
        return self._decorated[interpret]


# Interpreted launches patch process-wide state (triton.language, JITFunction): one at a time.
_INTERPRETER_LOCK = threading.Lock()


@functools.cache
def _rewritten(fn: Callable[..., Any]) -> Callable[..., Any]:
    from triton.runtime.interpreter import InterpretedFunction

    return InterpretedFunction(fn).rewrite()


@contextlib.contextmanager
def _interpret_compiled_helpers() -> Iterator[None]:
    """Let an interpreted kernel call device functions that were decorated for compilation.

    ``triton.language``'s own helpers (``tl.sum``, ``tl.max``, ``tl.zeros``...) are ``@jit``
    functions decorated when triton was imported. If ``TRITON_INTERPRET`` was unset then (vLLM
    imports triton early), they are ``JITFunction`` objects whose ``__call__`` only raises outside
    a compiled kernel; during an interpreted launch they run through the interpreter instead.
    Each call patches ``triton.language`` for the interpreter and restores it afterwards (the
    interpreter's own device-function call never restores it, which breaks later compilation).
    """
    from triton.runtime.interpreter import _patch_lang
    from triton.runtime.jit import JITFunction

    original = JITFunction.__call__

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        scope = _patch_lang(self.fn)
        try:
            return _rewritten(self.fn)(*args, **kwargs)
        finally:
            scope.restore()

    JITFunction.__call__ = call
    try:
        yield
    finally:
        JITFunction.__call__ = original


def lazy_jit(fn: Callable[..., None]) -> LazyKernel:
    """Decorator: like ``triton.jit``, but decided at launch time (see the module docstring)."""
    return LazyKernel(fn)


def device_function(fn: Callable[..., Any]) -> Any:
    """Decorator for a Triton device function that kernels call: always decorated for
    compilation, whatever ``TRITON_INTERPRET`` says now, so compiled kernels (and ahead-of-time
    compilation) inline it; an interpreted launch runs it through the interpreter, as it runs
    ``triton.language``'s own helpers (:func:`_interpret_compiled_helpers`). Without Triton the
    function is left as it is: nothing calls it then."""
    if triton is None:
        return fn
    from triton.runtime.jit import JITFunction

    return JITFunction(fn)


@dataclass(frozen=True)
class KernelSpec:
    """One specialisation of a kernel to compile ahead of time (see :mod:`winnow.kernels.aot`).

    ``signature`` maps every argument name to a Triton type (``"*bf16"``, ``"i32"``...) or to
    ``"constexpr"``; ``constexprs`` gives the values of the latter.
    """

    name: str
    kernel: LazyKernel
    signature: dict[str, str]
    constexprs: dict[str, Any] = field(default_factory=dict)
    num_warps: int = 4

    @classmethod
    def of(
        cls,
        kernel: LazyKernel,
        name: str,
        dtype: str,
        constexprs: dict[str, Any],
        *,
        pointers: dict[str, str] | None = None,
        num_warps: int = 4,
    ) -> KernelSpec:
        """A spec whose signature is read off the kernel's own parameters, by the naming rule
        every kernel here follows: a ``*_ptr`` points to ``dtype`` unless ``pointers`` names its
        type, a ``stride_*`` is i64, a ``tl.constexpr`` is a constexpr, anything else is i32."""
        types = pointers or {}
        signature = {}
        for param in inspect.signature(kernel.fn).parameters.values():
            if "constexpr" in str(param.annotation):
                signature[param.name] = "constexpr"
            elif param.name.endswith("_ptr"):
                signature[param.name] = types.get(param.name, dtype)
            else:
                signature[param.name] = "i64" if param.name.startswith("stride_") else "i32"
        return cls(f"{name}_{dtype[1:]}", kernel, signature, constexprs, num_warps)

"""Compile every kernel ahead of time for NVIDIA targets, without a GPU.

Proof that the kernels build for real hardware on machines that can only interpret them::

    python -m winnow.kernels.aot --arch 80 90

Triton fixes, when it is imported, whether ``triton.language``'s own helpers are compiled or
interpreted; compile in a process that imported triton without ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._triton import KernelSpec, triton
from .entropy import ENTROPY_SPECS
from .prm_labels import PRM_LABEL_SPECS
from .reward_head import LINEAR_HEAD_SPECS, MLP_HEAD_SPECS

__all__ = ["KERNEL_SPECS", "compile_spec"]

KERNEL_SPECS: list[KernelSpec] = [
    *LINEAR_HEAD_SPECS,
    *MLP_HEAD_SPECS,
    *PRM_LABEL_SPECS,
    *ENTROPY_SPECS,
]


def _helpers_interpreted() -> bool:
    from triton.runtime.jit import JITFunction

    return not isinstance(triton.language.zeros, JITFunction)


def compile_spec(spec: KernelSpec, capability: int) -> Any:
    """Compile ``spec`` for CUDA compute capability ``capability`` (80 for A100, 90 for H100).

    Returns Triton's ``CompiledKernel``; ``.asm["ptx"]`` holds the PTX (and ``.asm["cubin"]`` the
    binary when ``ptxas`` is available, as it is in the triton wheel).
    """
    if triton is None:
        raise RuntimeError("ahead-of-time compilation needs the `triton` package")
    if _helpers_interpreted():
        raise RuntimeError(
            "triton was imported with TRITON_INTERPRET=1, so its language helpers can only be "
            "interpreted in this process; compile in a process started without it"
        )
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    source = ASTSource(
        fn=spec.kernel.decorated(interpret=False),
        signature=spec.signature,
        constexprs=spec.constexprs,
    )
    return triton.compile(
        source,
        target=GPUTarget("cuda", capability, 32),
        options={"num_warps": spec.num_warps},
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="e.g. 80 90")
    args = parser.parse_args(argv)
    print(f"{'kernel':<20} {'arch':>6} {'ptx bytes':>10} {'cubin bytes':>12}")
    for spec in KERNEL_SPECS:
        for capability in args.arch:
            asm = compile_spec(spec, capability).asm
            cubin = len(asm.get("cubin", b""))
            print(f"{spec.name:<20} {'sm_' + str(capability):>6} {len(asm['ptx']):>10} {cubin:>12}")


if __name__ == "__main__":
    main()

"""Every kernel compiles ahead of time to PTX and a cubin for sm_80 and sm_90, without a GPU."""

from __future__ import annotations

import pytest

from winnow.kernels._triton import KernelSpec
from winnow.kernels.aot import KERNEL_SPECS, compile_spec


def test_every_kernel_has_a_spec() -> None:
    kernels = {spec.kernel.fn.__name__ for spec in KERNEL_SPECS}
    assert kernels == {
        "_linear_head_kernel",
        "_mlp_head_kernel",
        "_prm_label_kernel",
        "_entropy_kernel",
    }


@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION is unset")
@pytest.mark.parametrize("capability", [80, 90])
@pytest.mark.parametrize("spec", KERNEL_SPECS, ids=lambda spec: spec.name)
def test_compiles_for_nvidia(spec: KernelSpec, capability: int) -> None:
    asm = compile_spec(spec, capability).asm
    ptx = asm["ptx"]
    assert f".entry {spec.kernel.fn.__name__}(" in ptx
    assert f".target sm_{capability}" in ptx
    assert len(asm["cubin"]) > 0  # the triton wheel ships ptxas

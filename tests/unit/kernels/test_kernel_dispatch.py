"""Backend choice: auto, the WINNOW_KERNELS variable, force_backend, and life without triton."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import winnow.kernels as kernels
from winnow.kernels import dispatch

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # only a device name: nothing is allocated on it
REPO_ROOT = Path(__file__).resolve().parents[3]


def small_inputs() -> dict[str, tuple[Any, ...]]:
    """Arguments of each public op, on CPU."""
    hidden = torch.randn(12, 16)
    positions = torch.tensor([3, 11, -1])
    head = kernels.LinearHead(torch.randn(16, 2), torch.randn(2))
    return {
        "reward_head": (hidden, positions, head),
        "prm_label_probs": (hidden, positions, torch.randn(50, 16), torch.tensor([1, 7])),
        "next_token_entropy": (torch.randn(3, 50),),
    }


def spy_on(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record which implementation each public op calls (the real one still runs)."""
    calls: list[str] = []
    for name in dir(dispatch):
        if name.endswith(("_torch", "_triton")):
            real = getattr(dispatch, name)

            def spy(*args: Any, _real: Callable[..., Any] = real, _name: str = name) -> Any:
                calls.append(_name)
                return _real(*args)

            monkeypatch.setattr(dispatch, name, spy)
    return calls


def test_auto_picks_torch_on_cpu_and_triton_on_cuda() -> None:
    assert kernels.selected_backend(CPU) == "torch"
    assert kernels.selected_backend(CUDA) == "triton"


@pytest.mark.usefixtures("triton_interpret")
def test_auto_runs_the_torch_reference_on_cpu_even_when_interpreting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = spy_on(monkeypatch)
    for name, args in small_inputs().items():
        getattr(kernels, name)(*args)
    assert calls == ["reward_head_torch", "prm_label_probs_torch", "next_token_entropy_torch"]


@pytest.mark.usefixtures("triton_interpret")
@pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")
def test_forcing_triton_runs_the_kernels_under_the_interpreter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = spy_on(monkeypatch)
    inputs = small_inputs()
    with kernels.force_backend("torch"):
        want = {name: getattr(kernels, name)(*args) for name, args in inputs.items()}
    with kernels.force_backend("triton"):
        got = {name: getattr(kernels, name)(*args) for name, args in inputs.items()}
    for name in inputs:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-5, equal_nan=True)
    assert calls == [
        *("reward_head_torch", "prm_label_probs_torch", "next_token_entropy_torch"),
        *("reward_head_triton", "prm_label_probs_triton", "next_token_entropy_triton"),
    ]


def test_forcing_triton_on_cpu_without_the_interpreter_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with kernels.force_backend("triton"):
        for name, args in small_inputs().items():
            with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
                getattr(kernels, name)(*args)


@pytest.mark.parametrize(
    ("value", "cpu", "cuda"),
    [
        ("", "torch", "triton"),
        ("auto", "torch", "triton"),
        ("torch", "torch", "torch"),
        (" Triton ", "triton", "triton"),
    ],
)
def test_environment_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, cpu: str, cuda: str
) -> None:
    monkeypatch.setenv("WINNOW_KERNELS", value)
    assert (kernels.selected_backend(CPU), kernels.selected_backend(CUDA)) == (cpu, cuda)


def test_invalid_choices_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINNOW_KERNELS", "cuda")
    with pytest.raises(ValueError, match="WINNOW_KERNELS must be one of auto, triton, torch"):
        kernels.selected_backend(CPU)
    with pytest.raises(ValueError, match="force_backend"):
        kernels.force_backend("fast")  # type: ignore[arg-type]


def test_force_backend_overrides_the_variable_and_restores_on_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WINNOW_KERNELS", "triton")
    with kernels.force_backend("torch"):
        assert kernels.selected_backend(CUDA) == "torch"
        with kernels.force_backend("auto"):
            assert kernels.selected_backend(CPU) == "torch"
            assert kernels.selected_backend(CUDA) == "triton"
        assert kernels.selected_backend(CUDA) == "torch"
    assert kernels.selected_backend(CPU) == "triton"


def test_force_backend_as_a_plain_call_stays_in_force() -> None:
    kernels.force_backend("triton")
    assert kernels.selected_backend(CPU) == "triton"


def test_works_without_triton_installed() -> None:
    """In a fresh interpreter where ``import triton`` fails, the package falls back to torch."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["triton"] = None  # makes `import triton` raise ImportError
        import torch
        import winnow.kernels as kernels
        import winnow.kernels.aot  # every module imports, the kernels' included

        assert kernels.selected_backend(torch.device("cuda")) == "torch"
        print(kernels.next_token_entropy(torch.zeros(1, 4)).item())
        with kernels.force_backend("triton"):
            try:
                kernels.next_token_entropy(torch.zeros(1, 4))
            except RuntimeError as error:
                print(error)
        """
    )
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    entropy, error = result.stdout.splitlines()
    assert float(entropy) == pytest.approx(1.3862944)  # log(4)
    assert "`triton` package, which is not installed" in error

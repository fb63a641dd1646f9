"""The entropy kernel (interpreted) against its torch reference and known values."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from winnow.kernels.entropy import next_token_entropy_torch, next_token_entropy_triton

pytestmark = [
    pytest.mark.usefixtures("triton_interpret"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter"),
]

NEG_INF = float("-inf")


def assert_same(logits: torch.Tensor) -> torch.Tensor:
    """Kernel and reference agree (NaN where the other is NaN); returns the kernel's result."""
    got = next_token_entropy_triton(logits)
    want = next_token_entropy_torch(logits)
    assert got.dtype == torch.float32
    assert got.shape == (logits.shape[0],)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=3e-5, equal_nan=True)
    return got


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("rows", "vocab"),
    [(1, 1), (3, 100), (4, 9000)],  # one partial block ... three 4096-wide blocks
)
def test_matches_reference(dtype: torch.dtype, rows: int, vocab: int) -> None:
    assert_same((torch.randn(rows, vocab) * 4).to(dtype))


def test_known_values() -> None:
    vocab = 5000
    uniform = torch.zeros(1, vocab)
    one_finite = torch.full((1, vocab), NEG_INF)
    one_finite[0, 4321] = 2.5
    two_equal = torch.full((1, vocab), NEG_INF)
    two_equal[0, [3, 4500]] = 7.0
    got = assert_same(torch.cat([uniform, one_finite, two_equal]))
    expected = torch.tensor([math.log(vocab), 0.0, math.log(2)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_large_logits_are_stable() -> None:
    logits = torch.randn(3, 6000) + torch.tensor([[1e4], [-1e4], [0.0]])
    got = assert_same(logits)
    shifted = next_token_entropy_torch(logits - logits.mean(dim=1, keepdim=True))
    torch.testing.assert_close(got, shifted, rtol=1e-4, atol=1e-4)


def test_masked_rows() -> None:
    """Mostly -inf rows, with the finite values only in later blocks for some rows."""
    logits = torch.randn(4, 9000)
    mask = torch.rand(4, 9000) < 0.995
    mask[1, :8500] = True
    mask[2, :] = True
    mask[2, [0, 8999]] = False
    logits[mask] = NEG_INF
    got = assert_same(logits)
    assert torch.isfinite(got).all()


def test_all_masked_row_is_nan() -> None:
    logits = torch.randn(3, 300)
    logits[1] = NEG_INF
    got = assert_same(logits)
    assert torch.isnan(got[1])
    assert torch.isfinite(got[[0, 2]]).all()


def test_inf_or_nan_logits_give_nan() -> None:
    logits = torch.randn(3, 5000)
    logits[0, 4500] = float("inf")
    logits[1, 10] = float("nan")
    got = assert_same(logits)
    assert torch.isnan(got[:2]).all()
    assert torch.isfinite(got[2])


def test_empty_batch() -> None:
    got = assert_same(torch.empty(0, 49152))
    assert got.shape == (0,)


@pytest.mark.parametrize(
    "make_view",
    [
        pytest.param(lambda x: x[:, :700], id="row-stride-wider-than-vocab"),
        pytest.param(lambda x: x[::2, :700], id="every-other-row"),
        pytest.param(lambda x: x.T.contiguous().T[:, :700], id="column-major"),
        pytest.param(lambda x: x[:, 1:1401:2], id="column-stride-2"),
    ],
)
def test_non_contiguous(make_view: Callable[[torch.Tensor], torch.Tensor]) -> None:
    base = torch.randn(6, 1500) * 3
    view = make_view(base)
    assert not view.is_contiguous()
    assert_same(view)


def test_rejects_empty_vocabulary_and_integer_logits() -> None:
    with pytest.raises(ValueError, match="vocabulary"):
        next_token_entropy_triton(torch.empty(2, 0))
    with pytest.raises(TypeError, match="float32"):
        next_token_entropy_triton(torch.zeros(2, 5, dtype=torch.int64))

"""The reward-head kernels (interpreted) against their torch reference and a plain recomputation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from winnow.kernels.heads import LinearHead, MLPHead, RewardHead
from winnow.kernels.reward_head import last_token_positions, reward_head_torch, reward_head_triton

pytestmark = [
    pytest.mark.usefixtures("triton_interpret"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter"),
]

HIDDEN = 40
INNER = 24


def make_head(kind: str, n_out: int | None, dtype: torch.dtype = torch.float32) -> RewardHead:
    """A head of ``kind`` with ``n_out`` outputs (None: one score per row, 1-D weights)."""
    out_shape = () if n_out is None else (n_out,)
    if kind == "linear":
        return LinearHead(
            torch.randn(HIDDEN, *out_shape, dtype=dtype), torch.randn(out_shape, dtype=dtype)
        )
    if kind == "linear-no-bias":
        return LinearHead(torch.randn(HIDDEN, *out_shape, dtype=dtype))
    if kind == "mlp":
        return MLPHead(
            torch.randn(HIDDEN, INNER, dtype=dtype) / 4,
            torch.randn(INNER, dtype=dtype),
            torch.randn(INNER, *out_shape, dtype=dtype),
            torch.randn(out_shape, dtype=dtype),
        )
    assert kind == "mlp-no-bias"
    return MLPHead(
        torch.randn(HIDDEN, INNER, dtype=dtype),
        None,
        torch.randn(INNER, *out_shape, dtype=dtype),
        None,
    )


def plain_head(head: RewardHead, rows: torch.Tensor) -> torch.Tensor:
    """An independent fp64 recomputation, one row at a time."""

    def affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        y = x @ w.double()
        return y if b is None else y + b.double()

    outs = []
    for row in rows.double():
        if isinstance(head, LinearHead):
            outs.append(affine(row, head.weight, head.bias))
        else:
            outs.append(affine(torch.relu(affine(row, head.w1, head.b1)), head.w2, head.b2))
    return torch.stack(outs).float()


def assert_same(hidden: torch.Tensor, positions: torch.Tensor, head: RewardHead) -> torch.Tensor:
    got = reward_head_triton(hidden, positions, head)
    want = reward_head_torch(hidden, positions, head)
    assert got.dtype == torch.float32
    expected_shape = (
        (positions.shape[0],) if head.scalar else (positions.shape[0], head.out_features)
    )
    assert got.shape == want.shape == expected_shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4, equal_nan=True)
    return got


@pytest.mark.parametrize("kind", ["linear", "linear-no-bias", "mlp", "mlp-no-bias"])
@pytest.mark.parametrize("n_out", [None, 1, 3])
def test_matches_reference_and_plain_recomputation(kind: str, n_out: int | None) -> None:
    hidden = torch.randn(50, HIDDEN)
    positions = torch.randint(0, 50, (21,))  # two blocks of 16 positions, the second partial
    head = make_head(kind, n_out)
    got = assert_same(hidden, positions, head)
    want = plain_head(head, hidden[positions])
    torch.testing.assert_close(got, want.reshape(got.shape), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("hidden_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_dtypes(hidden_dtype: torch.dtype, head_dtype: torch.dtype, kind: str) -> None:
    hidden = torch.randn(30, HIDDEN, dtype=hidden_dtype)
    positions = torch.randint(0, 30, (9,))
    assert_same(hidden, positions, make_head(kind, 2, head_dtype))


def test_smollm2_width_spans_several_blocks() -> None:
    """H=576 (SmolLM2-135M): the kernels loop over the hidden and inner dimensions."""
    hidden = torch.randn(300, 576)
    positions = torch.randint(0, 300, (20,))
    head = MLPHead(torch.randn(576, 96) / 24, torch.randn(96), torch.randn(96, 2), torch.randn(2))
    assert_same(hidden, positions, head)
    assert_same(hidden, positions, LinearHead(torch.randn(576) / 24, torch.randn(1)))


def test_ragged_batch_scores_each_sequences_last_token() -> None:
    lengths = torch.tensor([5, 0, 1, 12, 0, 3])
    cu_seqlens = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    hidden = torch.randn(int(lengths.sum()), HIDDEN)
    head = make_head("mlp", None)
    positions = last_token_positions(cu_seqlens)
    assert positions.tolist() == [4, -1, 5, 17, -1, 20]
    got = assert_same(hidden, positions, head)
    non_empty = lengths > 0
    assert torch.isnan(got[~non_empty]).all()
    want = plain_head(head, hidden[positions[non_empty]])
    torch.testing.assert_close(got[non_empty], want, rtol=1e-4, atol=1e-4)


def test_padding_and_out_of_range_positions_give_nan_rows() -> None:
    hidden = torch.randn(10, HIDDEN)
    positions = torch.tensor([0, -1, 9, 10, -7, 1_000_000, 3])
    got = assert_same(hidden, positions, make_head("linear", 2))
    assert torch.isnan(got[[1, 3, 4, 5]]).all()
    assert torch.isfinite(got[[0, 2, 6]]).all()


@pytest.mark.parametrize("n_tokens", [0, 10])
@pytest.mark.parametrize("n_out", [None, 2])
def test_no_positions(n_tokens: int, n_out: int | None) -> None:
    hidden = torch.randn(n_tokens, HIDDEN)
    got = assert_same(hidden, torch.zeros(0, dtype=torch.int64), make_head("mlp", n_out))
    assert got.numel() == 0


def test_no_tokens_gives_nan_rows() -> None:
    got = assert_same(torch.randn(0, HIDDEN), torch.tensor([0, -1, 2]), make_head("linear", 2))
    assert got.shape == (3, 2)
    assert torch.isnan(got).all()


def test_non_contiguous_inputs() -> None:
    hidden = torch.randn(HIDDEN, 60).T  # column-major view
    positions = torch.randint(0, 60, (40,))[::3]
    linear = torch.nn.Linear(HIDDEN, 3)  # weight [3, H]: the head takes its transposed view
    head = LinearHead(linear.weight.detach().T, linear.bias.detach())
    assert not (hidden.is_contiguous() or positions.is_contiguous() or head.weight.is_contiguous())
    got = assert_same(hidden, positions, head)
    torch.testing.assert_close(got, linear(hidden[positions]).detach(), rtol=1e-4, atol=1e-4)
    mlp = MLPHead(torch.randn(INNER, HIDDEN).T, None, torch.randn(2, INNER).T, torch.randn(2))
    assert_same(hidden, positions, mlp)


def test_int32_positions() -> None:
    hidden = torch.randn(20, HIDDEN)
    positions = torch.tensor([19, 0, -1, 4], dtype=torch.int32)
    assert_same(hidden, positions, make_head("linear", None))


def test_last_token_positions() -> None:
    assert last_token_positions(torch.tensor([0])).tolist() == []
    assert last_token_positions(torch.tensor([0, 0, 0])).tolist() == [-1, -1]
    positions = last_token_positions(torch.tensor([0, 2, 2, 7], dtype=torch.int32))
    assert positions.dtype == torch.int64
    assert positions.tolist() == [1, -1, 6]
    with pytest.raises(ValueError, match="leading 0"):
        last_token_positions(torch.tensor([], dtype=torch.int64))


def test_invalid_heads_and_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="do not chain"):
        MLPHead(torch.randn(HIDDEN, 8), None, torch.randn(9, 2), None)
    with pytest.raises(ValueError, match="2 element"):
        LinearHead(torch.randn(HIDDEN, 2), torch.randn(3))
    with pytest.raises(TypeError, match="float32"):
        LinearHead(torch.ones(HIDDEN, dtype=torch.int64))
    with pytest.raises(ValueError, match="features"):
        reward_head_triton(torch.randn(4, HIDDEN + 1), torch.tensor([0]), make_head("linear", 1))
    with pytest.raises(TypeError, match="positions"):
        reward_head_triton(torch.randn(4, HIDDEN), torch.tensor([0.0]), make_head("linear", 1))


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_to_moves_every_tensor_and_keeps_the_head(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    head: RewardHead = (
        LinearHead(torch.randn(8, generator=g), None)
        if kind == "linear"
        else MLPHead(
            torch.randn(8, 4, generator=g),
            torch.randn(4, generator=g),
            torch.randn(4, generator=g),
            None,
        )
    )
    assert head.to("cpu") is head  # already there: no copy
    moved = head.to("meta")
    assert type(moved) is type(head)
    tensors = [getattr(moved, f.name) for f in dataclasses.fields(moved)]
    assert all(t is None or t.device.type == "meta" for t in tensors)
    assert sum(t is not None for t in tensors) == (1 if kind == "linear" else 3)
    assert moved.in_features == head.in_features and moved.out_features == head.out_features

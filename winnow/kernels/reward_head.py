"""Ragged reward head: gather hidden-state rows of a packed batch and score them.

The policy (or a reward model sharing its trunk) returns the hidden states of a packed batch,
``hidden [total_tokens, H]``, every sequence after the other. A reward head scores a few rows:
the last token of each sequence (outcome reward) or every step-tag token (process reward). The
Triton kernel gathers those rows and applies the whole head in one launch, accumulating in fp32,
so neither the gathered rows nor the MLP's inner activations ever reach global memory.

The heads (:mod:`.heads`) are linear or a ReLU MLP, as the ``score`` heads of Qwen2.5-Math's
reward and process reward models (Linear, ReLU, Linear).

Positions outside ``[0, total_tokens)`` (``-1`` is the padding value) give NaN rows.
"""

from __future__ import annotations

import torch

from ._common import (
    check_hidden_positions,
    check_index,
    check_same_device,
    gather_rows,
    nan_where_invalid,
)
from ._tiles import BLOCK_P, gathered_matmul, gathered_rows, load_tile, store_rows
from ._triton import KernelSpec, block_size, cdiv, device_guard, lazy_jit, require_launchable, tl
from .heads import LinearHead, MLPHead, RewardHead

__all__ = [
    "LINEAR_HEAD_SPECS",
    "MLP_HEAD_SPECS",
    "LinearHead",
    "MLPHead",
    "RewardHead",
    "last_token_positions",
    "reward_head_torch",
    "reward_head_triton",
]


def last_token_positions(cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Row of each sequence's last token in a packed batch, ``-1`` for an empty sequence.

    ``cu_seqlens [N + 1]`` holds cumulative lengths starting at 0. The result is int64 ``[N]``,
    aligned with the sequences: an empty one keeps its slot with position ``-1``, which the
    reward ops turn into a NaN score instead of shifting every later score by one.
    """
    check_index("cu_seqlens", cu_seqlens)
    if cu_seqlens.shape[0] == 0:
        raise ValueError("cu_seqlens needs at least one element (the leading 0)")
    ends = cu_seqlens[1:].long()
    non_empty = ends > cu_seqlens[:-1]
    return torch.where(non_empty, ends - 1, -1)


def _check_inputs(hidden: torch.Tensor, positions: torch.Tensor, head: RewardHead) -> None:
    check_hidden_positions(hidden, positions)
    if head.in_features != hidden.shape[1]:
        raise ValueError(f"head expects {head.in_features} features, hidden has {hidden.shape[1]}")
    check_same_device(hidden=hidden, positions=positions, head=head.first_weight)


def _affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight + bias`` in fp32 as ``[P, N]``; a 1-D weight is one output column."""
    out = x @ weight.float().reshape(weight.shape[0], -1)
    return out if bias is None else out + bias.float().reshape(-1)


def _apply_torch(head: RewardHead, rows: torch.Tensor) -> torch.Tensor:
    """The head on fp32 rows ``[P, H]``, as ``[P, C]``."""
    if isinstance(head, LinearHead):
        return _affine(rows, head.weight, head.bias)
    return _affine(torch.relu(_affine(rows, head.w1, head.b1)), head.w2, head.b2)


def reward_head_torch(
    hidden: torch.Tensor, positions: torch.Tensor, head: RewardHead
) -> torch.Tensor:
    """Reference: ``head(hidden[positions])`` in fp32, ``[P]`` or ``[P, C]``."""
    _check_inputs(hidden, positions, head)
    rows, valid = gather_rows(hidden, positions)
    out = nan_where_invalid(_apply_torch(head, rows), valid)
    return out.reshape(-1) if head.scalar else out


@lazy_jit
def _linear_head_kernel(
    hidden_ptr,
    pos_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    n_pos,
    n_tokens,
    n_in,
    n_out,
    stride_ht,
    stride_hh,
    stride_pos,
    stride_wi,
    stride_wo,
    HAS_BIAS: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """One program per BLOCK_P positions: ``out = hidden[pos] @ w + b``."""
    rows, row_in, pos, valid = gathered_rows(pos_ptr, stride_pos, n_pos, n_tokens, BLOCK_P)
    cols = tl.arange(0, BLOCK_C)
    col_in = cols < n_out
    acc = tl.zeros([BLOCK_P, BLOCK_C], tl.float32)
    acc = gathered_matmul(
        acc, hidden_ptr, pos, valid, stride_ht, stride_hh, n_in,
        w_ptr, cols, col_in, stride_wi, stride_wo, BLOCK_H,
    )  # fmt: skip
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=col_in, other=0.0).to(tl.float32)[None, :]
    store_rows(out_ptr, rows, row_in, cols, col_in, n_out, acc, valid)


@lazy_jit
def _mlp_head_kernel(
    hidden_ptr,
    pos_ptr,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    b2_ptr,
    out_ptr,
    n_pos,
    n_tokens,
    n_in,
    n_inner,
    n_out,
    stride_ht,
    stride_hh,
    stride_pos,
    stride_w1i,
    stride_w1d,
    stride_w2d,
    stride_w2o,
    HAS_B1: tl.constexpr,
    HAS_B2: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """One program per BLOCK_P positions: ``out = relu(hidden[pos] @ w1 + b1) @ w2 + b2``.

    The inner activations are produced BLOCK_D columns at a time and folded into the output
    straight away, so they never leave registers.
    """
    rows, row_in, pos, valid = gathered_rows(pos_ptr, stride_pos, n_pos, n_tokens, BLOCK_P)
    cols = tl.arange(0, BLOCK_C)
    col_in = cols < n_out
    acc = tl.zeros([BLOCK_P, BLOCK_C], tl.float32)
    for d0 in range(0, n_inner, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_in = ds < n_inner
        inner = tl.zeros([BLOCK_P, BLOCK_D], tl.float32)
        inner = gathered_matmul(
            inner, hidden_ptr, pos, valid, stride_ht, stride_hh, n_in,
            w1_ptr, ds, d_in, stride_w1i, stride_w1d, BLOCK_H,
        )  # fmt: skip
        if HAS_B1:
            inner += tl.load(b1_ptr + ds, mask=d_in, other=0.0).to(tl.float32)[None, :]
        inner = tl.maximum(inner, 0.0)
        w2 = load_tile(w2_ptr, ds, d_in, cols, col_in, stride_w2d, stride_w2o)
        acc += tl.dot(inner, w2, input_precision="ieee")
    if HAS_B2:
        acc += tl.load(b2_ptr + cols, mask=col_in, other=0.0).to(tl.float32)[None, :]
    store_rows(out_ptr, rows, row_in, cols, col_in, n_out, acc, valid)


# The fp32 FMA dots of 64x64 tiles spill registers with 4 warps on sm_90 (ptxas), not with 8.
_MLP_WARPS = 8


def _strides(weight: torch.Tensor) -> tuple[int, int]:
    """(input, output) strides of a ``[K]`` or ``[K, N]`` weight; a 1-D weight is one column."""
    return (weight.stride(0), 0) if weight.dim() == 1 else (weight.stride(0), weight.stride(1))


def _bias_arg(bias: torch.Tensor | None, fallback: torch.Tensor) -> torch.Tensor:
    """A contiguous flat bias, or any pointer when there is none (the kernel will not read it)."""
    return fallback if bias is None else bias.reshape(-1).contiguous()


def _launch_linear(
    head: LinearHead, hidden: torch.Tensor, positions: torch.Tensor, out: torch.Tensor
) -> None:
    n_pos, n_out = out.shape
    _linear_head_kernel[(cdiv(n_pos, BLOCK_P),)](
        hidden,
        positions,
        head.weight,
        _bias_arg(head.bias, out),
        out,
        n_pos,
        hidden.shape[0],
        hidden.shape[1],
        n_out,
        hidden.stride(0),
        hidden.stride(1),
        positions.stride(0),
        *_strides(head.weight),
        HAS_BIAS=head.bias is not None,
        BLOCK_P=BLOCK_P,
        BLOCK_H=block_size(hidden.shape[1], low=16, high=128),
        BLOCK_C=block_size(n_out, low=16),
    )


def _launch_mlp(
    head: MLPHead, hidden: torch.Tensor, positions: torch.Tensor, out: torch.Tensor
) -> None:
    n_pos, n_out = out.shape
    _mlp_head_kernel[(cdiv(n_pos, BLOCK_P),)](
        hidden,
        positions,
        head.w1,
        _bias_arg(head.b1, out),
        head.w2,
        _bias_arg(head.b2, out),
        out,
        n_pos,
        hidden.shape[0],
        hidden.shape[1],
        head.w1.shape[1],
        n_out,
        hidden.stride(0),
        hidden.stride(1),
        positions.stride(0),
        head.w1.stride(0),
        head.w1.stride(1),
        *_strides(head.w2),
        HAS_B1=head.b1 is not None,
        HAS_B2=head.b2 is not None,
        BLOCK_P=BLOCK_P,
        BLOCK_H=block_size(hidden.shape[1], low=16, high=64),
        BLOCK_D=block_size(head.w1.shape[1], low=16, high=64),
        BLOCK_C=block_size(n_out, low=16),
        num_warps=_MLP_WARPS,
    )


def reward_head_triton(
    hidden: torch.Tensor, positions: torch.Tensor, head: RewardHead
) -> torch.Tensor:
    """Triton kernel, same contract as :func:`reward_head_torch`."""
    _check_inputs(hidden, positions, head)
    require_launchable(hidden.device)
    out = torch.empty(
        (positions.shape[0], head.out_features), dtype=torch.float32, device=hidden.device
    )
    if positions.shape[0] > 0:
        with device_guard(hidden.device):
            if isinstance(head, LinearHead):
                _launch_linear(head, hidden, positions, out)
            else:
                _launch_mlp(head, hidden, positions, out)
    return out.reshape(-1) if head.scalar else out


_INDEX_IN_FP32_OUT = {"pos_ptr": "*i64", "out_ptr": "*fp32"}  # every other pointer: the dtype
LINEAR_HEAD_SPECS = [  # hidden and head in one dtype; the blocks of a 576-wide trunk, 1 score
    KernelSpec.of(
        _linear_head_kernel,
        "linear_head",
        dtype,
        {"HAS_BIAS": True, "BLOCK_P": BLOCK_P, "BLOCK_H": 128, "BLOCK_C": 16},
        pointers=_INDEX_IN_FP32_OUT,
    )
    for dtype in ("*fp32", "*bf16")
]
MLP_HEAD_SPECS = [  # hidden and head in one dtype, both biases present
    KernelSpec.of(
        _mlp_head_kernel,
        "mlp_head",
        dtype,
        {
            "HAS_B1": True,
            "HAS_B2": True,
            "BLOCK_P": BLOCK_P,
            "BLOCK_H": 64,
            "BLOCK_D": 64,
            "BLOCK_C": 16,
        },
        pointers=_INDEX_IN_FP32_OUT,
        num_warps=_MLP_WARPS,
    )
    for dtype in ("*fp32", "*bf16")
]

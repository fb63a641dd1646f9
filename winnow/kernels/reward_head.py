"""Ragged reward head: gather hidden-state rows of a packed batch and score them.

The policy (or a reward model sharing its trunk) returns the hidden states of a packed batch,
``hidden [total_tokens, H]``, every sequence after the other. A reward head scores a few rows:
the last token of each sequence (outcome reward) or every step-tag token (process reward). The
Triton kernel gathers those rows and applies the whole head in one launch, accumulating in fp32,
so neither the gathered rows nor the MLP's inner activations ever reach global memory.

Heads use the ``[in, out]`` orientation: a ``torch.nn.Linear`` gives ``weight=linear.weight.T``
(a transposed view is fine, strides are honoured). The MLP's activation is ReLU, as in the
``score`` heads of Qwen2.5-Math's reward and process reward models (Linear, ReLU, Linear).

Positions outside ``[0, total_tokens)`` (``-1`` is the padding value) give NaN rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._common import (
    check_float,
    check_hidden_positions,
    check_index,
    check_same_device,
    gather_rows,
    nan_where_invalid,
)
from ._triton import KernelSpec, block_size, cdiv, device_guard, lazy_jit, require_launchable, tl

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


def _check_bias(name: str, bias: torch.Tensor | None, n_out: int) -> None:
    if bias is None:
        return
    check_float(name, bias, (0, 1))
    if bias.numel() != n_out:
        raise ValueError(f"{name} must have {n_out} element(s), got shape {tuple(bias.shape)}")


def _n_out(weight: torch.Tensor) -> int:
    return 1 if weight.dim() == 1 else weight.shape[1]


@dataclass(frozen=True, eq=False)  # eq on tensors is ambiguous: compare by identity
class LinearHead:
    """``score = hidden @ weight + bias``; ``weight [H]`` gives one score per row, ``[H, C]`` C."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None

    def __post_init__(self) -> None:
        check_float("weight", self.weight, (1, 2))
        _check_bias("bias", self.bias, _n_out(self.weight))
        check_same_device(weight=self.weight, bias=self.bias)

    @property
    def in_features(self) -> int:
        return self.weight.shape[0]

    @property
    def out_features(self) -> int:
        return _n_out(self.weight)

    @property
    def scalar(self) -> bool:
        """Whether the head returns ``[P]`` rather than ``[P, C]``."""
        return self.weight.dim() == 1


@dataclass(frozen=True, eq=False)
class MLPHead:
    """``score = relu(hidden @ w1 + b1) @ w2 + b2``; ``w1 [H, D]``, ``w2 [D]`` or ``[D, C]``."""

    w1: torch.Tensor
    b1: torch.Tensor | None
    w2: torch.Tensor
    b2: torch.Tensor | None

    def __post_init__(self) -> None:
        check_float("w1", self.w1, (2,))
        check_float("w2", self.w2, (1, 2))
        if self.w2.shape[0] != self.w1.shape[1]:
            raise ValueError(
                f"w1 {tuple(self.w1.shape)} and w2 {tuple(self.w2.shape)} do not chain"
            )
        _check_bias("b1", self.b1, self.w1.shape[1])
        _check_bias("b2", self.b2, _n_out(self.w2))
        check_same_device(w1=self.w1, b1=self.b1, w2=self.w2, b2=self.b2)

    @property
    def in_features(self) -> int:
        return self.w1.shape[0]

    @property
    def out_features(self) -> int:
        return _n_out(self.w2)

    @property
    def scalar(self) -> bool:
        """Whether the head returns ``[P]`` rather than ``[P, C]``."""
        return self.w2.dim() == 1


RewardHead = LinearHead | MLPHead


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
    weight = head.weight if isinstance(head, LinearHead) else head.w1
    check_same_device(hidden=hidden, positions=positions, head=weight)


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
    rows = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    row_in = rows < n_pos
    pos = tl.load(pos_ptr + rows * stride_pos, mask=row_in, other=-1).to(tl.int64)
    valid = row_in & (pos >= 0) & (pos < n_tokens)
    cols = tl.arange(0, BLOCK_C)
    col_in = cols < n_out
    acc = tl.zeros([BLOCK_P, BLOCK_C], tl.float32)
    for k0 in range(0, n_in, BLOCK_H):
        ks = k0 + tl.arange(0, BLOCK_H)
        k_in = ks < n_in
        x = tl.load(
            hidden_ptr + pos[:, None] * stride_ht + ks[None, :] * stride_hh,
            mask=valid[:, None] & k_in[None, :],
            other=0.0,
        )
        w = tl.load(
            w_ptr + ks[:, None] * stride_wi + cols[None, :] * stride_wo,
            mask=k_in[:, None] & col_in[None, :],
            other=0.0,
        )
        acc += tl.dot(x.to(tl.float32), w.to(tl.float32), input_precision="ieee")
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=col_in, other=0.0).to(tl.float32)[None, :]
    acc = tl.where(valid[:, None], acc, float("nan"))
    tl.store(
        out_ptr + rows[:, None] * n_out + cols[None, :], acc, mask=row_in[:, None] & col_in[None, :]
    )


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
    rows = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    row_in = rows < n_pos
    pos = tl.load(pos_ptr + rows * stride_pos, mask=row_in, other=-1).to(tl.int64)
    valid = row_in & (pos >= 0) & (pos < n_tokens)
    cols = tl.arange(0, BLOCK_C)
    col_in = cols < n_out
    acc = tl.zeros([BLOCK_P, BLOCK_C], tl.float32)
    for d0 in range(0, n_inner, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_in = ds < n_inner
        inner = tl.zeros([BLOCK_P, BLOCK_D], tl.float32)
        for k0 in range(0, n_in, BLOCK_H):
            ks = k0 + tl.arange(0, BLOCK_H)
            k_in = ks < n_in
            x = tl.load(
                hidden_ptr + pos[:, None] * stride_ht + ks[None, :] * stride_hh,
                mask=valid[:, None] & k_in[None, :],
                other=0.0,
            )
            w1 = tl.load(
                w1_ptr + ks[:, None] * stride_w1i + ds[None, :] * stride_w1d,
                mask=k_in[:, None] & d_in[None, :],
                other=0.0,
            )
            inner += tl.dot(x.to(tl.float32), w1.to(tl.float32), input_precision="ieee")
        if HAS_B1:
            inner += tl.load(b1_ptr + ds, mask=d_in, other=0.0).to(tl.float32)[None, :]
        inner = tl.maximum(inner, 0.0)
        w2 = tl.load(
            w2_ptr + ds[:, None] * stride_w2d + cols[None, :] * stride_w2o,
            mask=d_in[:, None] & col_in[None, :],
            other=0.0,
        )
        acc += tl.dot(inner, w2.to(tl.float32), input_precision="ieee")
    if HAS_B2:
        acc += tl.load(b2_ptr + cols, mask=col_in, other=0.0).to(tl.float32)[None, :]
    acc = tl.where(valid[:, None], acc, float("nan"))
    tl.store(
        out_ptr + rows[:, None] * n_out + cols[None, :], acc, mask=row_in[:, None] & col_in[None, :]
    )


# tl.dot needs every block dimension >= 16; 16 positions per program suit the few-hundred
# positions of a scoring batch.
_BLOCK_P = 16
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
    _linear_head_kernel[(cdiv(n_pos, _BLOCK_P),)](
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
        BLOCK_P=_BLOCK_P,
        BLOCK_H=block_size(hidden.shape[1], low=16, high=128),
        BLOCK_C=block_size(n_out, low=16),
    )


def _launch_mlp(
    head: MLPHead, hidden: torch.Tensor, positions: torch.Tensor, out: torch.Tensor
) -> None:
    n_pos, n_out = out.shape
    _mlp_head_kernel[(cdiv(n_pos, _BLOCK_P),)](
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
        BLOCK_P=_BLOCK_P,
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


def _linear_spec(dtype: str) -> KernelSpec:
    """``hidden`` and the head in ``dtype``; block sizes of a 576-wide trunk and one score."""
    return KernelSpec(
        name=f"linear_head_{dtype[1:]}",
        kernel=_linear_head_kernel,
        signature={
            "hidden_ptr": dtype,
            "pos_ptr": "*i64",
            "w_ptr": dtype,
            "b_ptr": dtype,
            "out_ptr": "*fp32",
            "n_pos": "i32",
            "n_tokens": "i32",
            "n_in": "i32",
            "n_out": "i32",
            "stride_ht": "i64",
            "stride_hh": "i64",
            "stride_pos": "i64",
            "stride_wi": "i64",
            "stride_wo": "i64",
            "HAS_BIAS": "constexpr",
            "BLOCK_P": "constexpr",
            "BLOCK_H": "constexpr",
            "BLOCK_C": "constexpr",
        },
        constexprs={"HAS_BIAS": True, "BLOCK_P": _BLOCK_P, "BLOCK_H": 128, "BLOCK_C": 16},
    )


def _mlp_spec(dtype: str) -> KernelSpec:
    """``hidden`` and the head in ``dtype``, both biases present."""
    return KernelSpec(
        name=f"mlp_head_{dtype[1:]}",
        kernel=_mlp_head_kernel,
        signature={
            "hidden_ptr": dtype,
            "pos_ptr": "*i64",
            "w1_ptr": dtype,
            "b1_ptr": dtype,
            "w2_ptr": dtype,
            "b2_ptr": dtype,
            "out_ptr": "*fp32",
            "n_pos": "i32",
            "n_tokens": "i32",
            "n_in": "i32",
            "n_inner": "i32",
            "n_out": "i32",
            "stride_ht": "i64",
            "stride_hh": "i64",
            "stride_pos": "i64",
            "stride_w1i": "i64",
            "stride_w1d": "i64",
            "stride_w2d": "i64",
            "stride_w2o": "i64",
            "HAS_B1": "constexpr",
            "HAS_B2": "constexpr",
            "BLOCK_P": "constexpr",
            "BLOCK_H": "constexpr",
            "BLOCK_D": "constexpr",
            "BLOCK_C": "constexpr",
        },
        constexprs={
            "HAS_B1": True,
            "HAS_B2": True,
            "BLOCK_P": _BLOCK_P,
            "BLOCK_H": 64,
            "BLOCK_D": 64,
            "BLOCK_C": 16,
        },
        num_warps=_MLP_WARPS,
    )


LINEAR_HEAD_SPECS = [_linear_spec(dtype) for dtype in ("*fp32", "*bf16")]
MLP_HEAD_SPECS = [_mlp_spec(dtype) for dtype in ("*fp32", "*bf16")]

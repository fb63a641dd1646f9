"""Process-reward label probabilities from the LM head, without full-vocabulary logits.

A generative PRM judges each reasoning step by the next-token distribution at the step tag,
restricted to a few label tokens (``+``/``-``, ``good``/``bad``...): the step's score is the
softmax over those labels' logits. Only the ``L`` label rows of ``lm_head [V, H]`` are needed, so
both backends read ``L`` rows instead of computing ``[P, V]`` logits (V is 49k-150k, L is ~2).

Invalid indices never read out of bounds: a position outside ``[0, T)`` gives a NaN row, and a
label id outside ``[0, V)`` makes the whole output NaN (it is a configuration error).
"""

from __future__ import annotations

import torch

from ._common import (
    check_float,
    check_hidden_positions,
    check_index,
    check_same_device,
    gather_rows,
    nan_where_invalid,
)
from ._tiles import BLOCK_P, gathered_matmul, gathered_rows, store_rows
from ._triton import KernelSpec, block_size, cdiv, device_guard, lazy_jit, require_launchable, tl

__all__ = ["PRM_LABEL_SPECS", "prm_label_probs_torch", "prm_label_probs_triton"]


def _check_inputs(
    hidden: torch.Tensor, positions: torch.Tensor, lm_head: torch.Tensor, label_ids: torch.Tensor
) -> None:
    check_hidden_positions(hidden, positions)
    check_float("lm_head", lm_head, (2,))
    check_index("label_ids", label_ids)
    if lm_head.shape[1] != hidden.shape[1]:
        raise ValueError(
            f"lm_head {tuple(lm_head.shape)} does not match hidden size {hidden.shape[1]}"
        )
    if lm_head.shape[0] == 0 or label_ids.shape[0] == 0:
        raise ValueError("lm_head and label_ids must not be empty")
    check_same_device(hidden=hidden, positions=positions, lm_head=lm_head, label_ids=label_ids)


def prm_label_probs_torch(
    hidden: torch.Tensor, positions: torch.Tensor, lm_head: torch.Tensor, label_ids: torch.Tensor
) -> torch.Tensor:
    """Reference: ``softmax(hidden[positions] @ lm_head[label_ids].T)`` in fp32, ``[P, L]``."""
    _check_inputs(hidden, positions, lm_head, label_ids)
    vocab = lm_head.shape[0]
    ids_valid = (label_ids >= 0) & (label_ids < vocab)
    label_rows = lm_head.index_select(0, label_ids.clamp(0, vocab - 1).long()).float()
    rows, valid = gather_rows(hidden, positions)
    probs = torch.softmax(rows @ label_rows.T, dim=-1)
    return nan_where_invalid(probs, valid & ids_valid.all())


@lazy_jit
def _prm_label_kernel(
    hidden_ptr,
    pos_ptr,
    lm_head_ptr,
    label_ptr,
    out_ptr,
    n_pos,
    n_tokens,
    n_in,
    vocab,
    n_labels,
    stride_ht,
    stride_hh,
    stride_pos,
    stride_lv,
    stride_lh,
    stride_label,
    BLOCK_P: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    """One program per BLOCK_P positions: label logits by a gathered matmul, then the softmax."""
    rows, row_in, pos, valid = gathered_rows(pos_ptr, stride_pos, n_pos, n_tokens, BLOCK_P)
    labels = tl.arange(0, BLOCK_L)
    label_in = labels < n_labels
    ids = tl.load(label_ptr + labels * stride_label, mask=label_in, other=0).to(tl.int64)
    id_ok = (ids >= 0) & (ids < vocab)
    n_bad_ids = tl.sum((label_in & ~id_ok).to(tl.int32), axis=0)
    acc = tl.zeros([BLOCK_P, BLOCK_L], tl.float32)
    acc = gathered_matmul(
        acc, hidden_ptr, pos, valid, stride_ht, stride_hh, n_in,
        lm_head_ptr, ids, label_in & id_ok, stride_lh, stride_lv, BLOCK_H,
    )  # fmt: skip
    logits = tl.where(label_in[None, :], acc, float("-inf"))
    e = tl.exp(logits - tl.max(logits, axis=1)[:, None])
    probs = e / tl.sum(e, axis=1)[:, None]
    store_rows(out_ptr, rows, row_in, labels, label_in, n_labels, probs, valid & (n_bad_ids == 0))


def prm_label_probs_triton(
    hidden: torch.Tensor, positions: torch.Tensor, lm_head: torch.Tensor, label_ids: torch.Tensor
) -> torch.Tensor:
    """Triton kernel, same contract as :func:`prm_label_probs_torch`."""
    _check_inputs(hidden, positions, lm_head, label_ids)
    require_launchable(hidden.device)
    n_pos, n_labels = positions.shape[0], label_ids.shape[0]
    out = torch.empty((n_pos, n_labels), dtype=torch.float32, device=hidden.device)
    if n_pos == 0:
        return out
    with device_guard(hidden.device):
        _prm_label_kernel[(cdiv(n_pos, BLOCK_P),)](
            hidden,
            positions,
            lm_head,
            label_ids,
            out,
            n_pos,
            hidden.shape[0],
            hidden.shape[1],
            lm_head.shape[0],
            n_labels,
            hidden.stride(0),
            hidden.stride(1),
            positions.stride(0),
            lm_head.stride(0),
            lm_head.stride(1),
            label_ids.stride(0),
            BLOCK_P=BLOCK_P,
            BLOCK_H=block_size(hidden.shape[1], low=16, high=128),
            BLOCK_L=block_size(n_labels, low=16),
        )
    return out


PRM_LABEL_SPECS = [
    KernelSpec.of(
        _prm_label_kernel,
        "prm_labels",
        dtype,
        {"BLOCK_P": BLOCK_P, "BLOCK_H": 128, "BLOCK_L": 16},
        pointers={"pos_ptr": "*i64", "label_ptr": "*i64", "out_ptr": "*fp32"},
    )
    for dtype in ("*fp32", "*bf16")
]

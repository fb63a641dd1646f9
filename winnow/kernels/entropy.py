"""Row-wise entropy of the next-token distribution over the full vocabulary.

``H(row) = -sum_v p_v log p_v`` with ``p = softmax(row)``, in nats. The CARDS segmenter calls this
inside a vLLM logits processor on every decoding step (entropy >= 3.0 nats ends a segment), so the
Triton kernel reads each row once, in vocabulary blocks, keeping a running max, sum of exponentials
and exponential-weighted sum of logits.

Conventions (both backends):

* ``-inf`` logits are masked tokens (probability 0); a row with at least one finite logit is fine.
* A row of only ``-inf`` has no distribution: its entropy is **NaN** (it then never crosses an
  entropy threshold, since every comparison with NaN is False).
* ``+inf`` or NaN logits give NaN.
"""

from __future__ import annotations

import torch

from ._common import check_float
from ._triton import KernelSpec, block_size, device_guard, lazy_jit, require_launchable, tl

__all__ = ["ENTROPY_SPECS", "next_token_entropy_torch", "next_token_entropy_triton"]


def _check_logits(logits: torch.Tensor) -> None:
    check_float("logits", logits, (2,))
    if logits.shape[1] == 0:
        raise ValueError("logits must have at least one vocabulary column")


def next_token_entropy_torch(logits: torch.Tensor) -> torch.Tensor:
    """Reference: entropy in nats of ``softmax(logits[b])`` for each row; fp32 ``[B]``."""
    _check_logits(logits)
    x = logits.float()
    row_max = x.amax(dim=-1, keepdim=True)
    z = x - torch.where(row_max == float("-inf"), 0.0, row_max)
    e = z.exp()
    s = e.sum(dim=-1)
    # H = log(s) - sum(e * z) / s. nansum drops the 0 * -inf of masked tokens only: a NaN or +inf
    # logit already makes s NaN or inf. An all -inf row has s = 0, so log(0) - 0 / 0 = NaN.
    # (This runs on every decoding step on CPU: it is 5-10x faster than -xlogy(p, p).sum().)
    entropy = s.log() - (e * z).nansum(dim=-1) / s
    return entropy.clamp_min(0.0)  # rounding can dip a near-deterministic row below zero


@lazy_jit
def _entropy_kernel(
    logits_ptr,
    out_ptr,
    n_cols,
    stride_row,
    stride_col,
    BLOCK_V: tl.constexpr,
):
    """One program per row. Each lane ``i`` keeps, over the columns it visits, its max ``m``,
    ``s = sum exp(x - m)`` and ``t = sum exp(x - m) * (x - m)``; lanes merge at the end and
    ``H = log(s) - t / s``. Keeping ``t`` relative to the max avoids cancellation for large logits.
    """
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * stride_row
    offsets = tl.arange(0, BLOCK_V)
    neg_inf = float("-inf")
    m = tl.full([BLOCK_V], neg_inf, tl.float32)
    s = tl.zeros([BLOCK_V], tl.float32)
    t = tl.zeros([BLOCK_V], tl.float32)
    for start in range(0, n_cols, BLOCK_V):
        cols = start + offsets
        x = tl.load(row_ptr + cols * stride_col, mask=cols < n_cols, other=neg_inf)
        x = x.to(tl.float32)
        m_new = tl.maximum(m, x)
        # Shift from the old to the new max; 0 for lanes that saw nothing finite (s = t = 0).
        shift = tl.where(m > neg_inf, m - m_new, 0.0)
        alpha = tl.exp(shift)
        # Only -inf is masked; NaN (which tl.maximum may skip) and +inf must poison s.
        unmasked = x != neg_inf
        z = tl.where(unmasked, x - m_new, 0.0)
        e = tl.where(unmasked, tl.exp(z), 0.0)
        t = alpha * (t + shift * s) + e * z
        s = alpha * s + e
        m = m_new
    m_row = tl.max(m, axis=0)
    shift = tl.where(m > neg_inf, m - m_row, 0.0)
    alpha = tl.exp(shift)
    s_row = tl.sum(alpha * s, axis=0)
    t_row = tl.sum(alpha * (t + shift * s), axis=0)
    # Rounding can push a near-deterministic row a hair below zero.
    entropy = tl.maximum(tl.log(s_row) - t_row / s_row, 0.0)
    tl.store(out_ptr + row, tl.where(s_row > 0.0, entropy, float("nan")))


def next_token_entropy_triton(logits: torch.Tensor) -> torch.Tensor:
    """Triton kernel, same contract as :func:`next_token_entropy_torch`."""
    _check_logits(logits)
    require_launchable(logits.device)
    n_rows, n_cols = logits.shape
    out = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    if n_rows == 0:
        return out
    block = block_size(n_cols, low=128, high=4096)
    with device_guard(logits.device):
        _entropy_kernel[(n_rows,)](
            logits,
            out,
            n_cols,
            logits.stride(0),
            logits.stride(1),
            BLOCK_V=block,
            num_warps=8,
        )
    return out


ENTROPY_SPECS = [
    KernelSpec.of(
        _entropy_kernel,
        "entropy",
        dtype,
        {"BLOCK_V": 4096},
        pointers={"out_ptr": "*fp32"},
        num_warps=8,
    )
    for dtype in ("*fp32", "*bf16")
]

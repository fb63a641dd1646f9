"""Triton device functions shared by the kernels that score gathered rows of a packed batch
(:mod:`.reward_head`, :mod:`.prm_labels`).

A program of those kernels handles ``BLOCK_P`` positions: it finds which hidden rows they are
(:func:`gathered_rows`), multiplies those rows by a weight matrix (:func:`gathered_matmul`, tile
by tile: :func:`load_tile` reads either kind, in fp32), and writes one output row per position, NaN
where the position is invalid (:func:`store_rows`). The kernels differ only in what they
multiply and what they do with the product.
"""

from __future__ import annotations

from ._triton import device_function, tl

# Positions per program: tl.dot needs every block dimension >= 16, and 16 suit the few hundred
# positions of a scoring batch.
BLOCK_P = 16


@device_function
def gathered_rows(pos_ptr, stride_pos, n_pos, n_tokens, BLOCK_P: tl.constexpr):
    """This program's output rows, which of them exist, the hidden row each reads (int64), and
    which read a row inside ``[0, n_tokens)``."""
    rows = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    row_in = rows < n_pos
    pos = tl.load(pos_ptr + rows * stride_pos, mask=row_in, other=-1).to(tl.int64)
    valid = row_in & (pos >= 0) & (pos < n_tokens)
    return rows, row_in, pos, valid


@device_function
def load_tile(ptr, r, r_in, c, c_in, stride_r, stride_c):
    """``ptr[r, c]`` as an fp32 ``[R, C]`` tile; 0 where ``r_in`` or ``c_in`` is False."""
    tile = tl.load(
        ptr + r[:, None] * stride_r + c[None, :] * stride_c,
        mask=r_in[:, None] & c_in[None, :],
        other=0.0,
    )
    return tile.to(tl.float32)


@device_function
def gathered_matmul(
    acc, hidden_ptr, pos, valid, stride_ht, stride_hh, n_in,
    w_ptr, cols, col_in, stride_wk, stride_wc, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """``acc + hidden[pos] @ w[:, cols]`` in fp32, over the ``n_in`` inputs ``BLOCK_H`` at a
    time: the gathered rows never leave registers."""
    for k0 in range(0, n_in, BLOCK_H):
        ks = k0 + tl.arange(0, BLOCK_H)
        k_in = ks < n_in
        x = load_tile(hidden_ptr, pos, valid, ks, k_in, stride_ht, stride_hh)
        w = load_tile(w_ptr, ks, k_in, cols, col_in, stride_wk, stride_wc)
        acc += tl.dot(x, w, input_precision="ieee")
    return acc


@device_function
def store_rows(out_ptr, rows, row_in, cols, col_in, n_cols, values, keep):
    """Write ``values [P, C]`` to the rows of a row-major ``[n_pos, n_cols]`` output, NaN in
    the rows where ``keep`` is False."""
    tl.store(
        out_ptr + rows[:, None] * n_cols + cols[None, :],
        tl.where(keep[:, None], values, float("nan")),
        mask=row_in[:, None] & col_in[None, :],
    )

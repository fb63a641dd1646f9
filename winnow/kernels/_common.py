"""Input checks and row gathering shared by the torch references and the Triton wrappers.

Convention for every index input (positions, label ids): an index outside its valid range never
raises and is never read out of bounds; the rows it touches come out as NaN. ``-1`` is the usual
padding value (see :func:`winnow.kernels.reward_head.last_token_positions`).
"""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_float(name: str, tensor: torch.Tensor, ndims: tuple[int, ...]) -> None:
    """Require a floating tensor (fp32, bf16 or fp16) with one of the given numbers of dims."""
    if tensor.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, bfloat16 or float16, got {tensor.dtype}")
    if tensor.dim() not in ndims:
        dims = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {dims}, got shape {tuple(tensor.shape)}")


def check_index(name: str, tensor: torch.Tensor) -> None:
    """Require a 1-D integer tensor."""
    if tensor.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be int64 or int32, got {tensor.dtype}")
    if tensor.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(tensor.shape)}")


def check_same_device(**tensors: torch.Tensor | None) -> None:
    """Require every given tensor to live on one device."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise ValueError(f"tensors must be on one device, got {devices}")


def check_hidden_positions(hidden: torch.Tensor, positions: torch.Tensor) -> None:
    """Validate the ``hidden [T, H]`` / ``positions [P]`` pair every gathering op takes."""
    check_float("hidden", hidden, (2,))
    check_index("positions", positions)


def gather_rows(hidden: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``hidden[positions]`` as fp32 ``[P, H]`` and a ``[P]`` mask of the valid positions.

    Invalid positions gather row 0 (or zeros when there is no row); callers mask them out.
    """
    n_tokens, hidden_size = hidden.shape
    valid = (positions >= 0) & (positions < n_tokens)
    if n_tokens == 0:
        rows = hidden.new_zeros((positions.shape[0], hidden_size), dtype=torch.float32)
    else:
        safe = torch.where(valid, positions, 0).long()
        rows = hidden.index_select(0, safe).float()
    return rows, valid


def nan_where_invalid(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``values`` with the rows where ``valid`` is False set to NaN."""
    shape = (-1,) + (1,) * (values.dim() - 1)
    return torch.where(valid.reshape(shape), values, torch.nan)

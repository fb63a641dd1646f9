"""The reward heads the kernels apply: a linear layer or a small ReLU MLP, in ``[in, out]``
orientation (a ``torch.nn.Linear`` gives ``weight=linear.weight.T``; a transposed view is fine,
strides are honoured). Construction checks dtypes, shapes and devices, so the kernels need not.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from ._common import check_float, check_same_device

__all__ = ["LinearHead", "MLPHead", "RewardHead"]


def _check_bias(name: str, bias: torch.Tensor | None, n_out: int) -> None:
    if bias is None:
        return
    check_float(name, bias, (0, 1))
    if bias.numel() != n_out:
        raise ValueError(f"{name} must have {n_out} element(s), got shape {tuple(bias.shape)}")


def _n_out(weight: torch.Tensor) -> int:
    return 1 if weight.dim() == 1 else weight.shape[1]


class _Head:
    """A head's widths, read off its first weight (``[H, ...]``) and its last (``[..]`` or
    ``[.., C]``), named by ``_ends``."""

    _ends: tuple[str, str]

    @property
    def first_weight(self) -> torch.Tensor:
        return getattr(self, self._ends[0])

    @property
    def last_weight(self) -> torch.Tensor:
        return getattr(self, self._ends[1])

    @property
    def in_features(self) -> int:
        return self.first_weight.shape[0]

    @property
    def out_features(self) -> int:
        return _n_out(self.last_weight)

    @property
    def scalar(self) -> bool:
        """Whether the head returns ``[P]`` rather than ``[P, C]``."""
        return self.last_weight.dim() == 1

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> RewardHead:
        """The same head with its tensors on ``device`` (and in ``dtype`` if given); itself if
        they are there already."""
        where = torch.device(device)
        moved = {
            f.name: t.to(where, dtype or t.dtype)
            for f in fields(self)  # type: ignore[arg-type]
            if isinstance(t := getattr(self, f.name), torch.Tensor)
            and (t.device != where or (dtype is not None and t.dtype != dtype))
        }
        return replace(self, **moved) if moved else self  # type: ignore[type-var,return-value]


@dataclass(frozen=True, eq=False)  # eq on tensors is ambiguous: compare by identity
class LinearHead(_Head):
    """``score = hidden @ weight + bias``; ``weight [H]`` gives one score per row, ``[H, C]`` C."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None

    def __post_init__(self) -> None:
        check_float("weight", self.weight, (1, 2))
        _check_bias("bias", self.bias, _n_out(self.weight))
        check_same_device(weight=self.weight, bias=self.bias)

    _ends = ("weight", "weight")


@dataclass(frozen=True, eq=False)
class MLPHead(_Head):
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

    _ends = ("w1", "w2")


RewardHead = LinearHead | MLPHead

"""Where a reward model's weights live and in which precision: the ``device`` and ``dtype`` of a
reward's configuration, resolved once at construction.

Unset, a reward model runs where a served model should: on the GPU in bfloat16 when CUDA is
available, else on the CPU in float32 (bfloat16 matmuls on a CPU are slow, and float32 keeps the
CPU scores those of a reference run). ``dtype: "auto"`` means the same choice for the device
given. Hidden states stay in the model's dtype and on its device; every head (a classifier's
``score``, a value head, label rows of the LM head, a probe) runs there too, in float32
arithmetic (:mod:`winnow.kernels`), so no score depends on a CPU float32 copy of anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

DType = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass(frozen=True, slots=True)
class Placement:
    device: torch.device
    dtype: torch.dtype

    def __str__(self) -> str:
        return f"{self.device} {str(self.dtype).removeprefix('torch.')}"


def resolve(device: str | None = None, dtype: str | None = None) -> Placement:
    """The placement a configuration asks for (``None``: the default; see the module docstring).

    A CUDA device on a host without CUDA is refused here, at start-up, not at the first score."""
    if device is None:
        where = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        where = torch.device(device)
        if where.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this host")
    if dtype is None or dtype == "auto":
        kind = torch.bfloat16 if where.type == "cuda" else torch.float32
    elif dtype in DTYPES:
        kind = DTYPES[dtype]
    else:
        raise ValueError(f"dtype {dtype!r}: expected auto, {', '.join(DTYPES)}")
    return Placement(where, kind)


TRAINING = Placement(torch.device("cpu"), torch.float32)
"""Where ``winnow train`` reads hidden states: the shipped heads were fitted on CPU float32 states,
and the trainers keep every feature on the host."""

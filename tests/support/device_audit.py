"""Check, without a GPU, that code driven with tensors of one device uses only that device.

vLLM hands logits processors CUDA logits; a CPU tensor mixed into their arithmetic raises inside
the sampler and kills the engine (or, used as an index, makes every step wait on a host copy).
Running the code on ``meta`` tensors under :class:`OnlyOn` records every torch call's tensor
arguments: ``strays`` lists those not on the given device, ``moves`` the copies made to it
(``Tensor.to``), which a processor should make once, not on every step. ``meta`` alone is not
enough: it refuses CPU operands in elementwise ops but not in matmuls or as indices.

Data-dependent reads (``tolist``, ``item``, and ``bool`` when ``reads`` has it: transformers'
mask helpers branch on one) cannot run on ``meta``; :class:`OnlyOn` answers them from ``reads``
(callables from the tensor to its value) and counts them in ``host_reads``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

_READS = {torch.Tensor.tolist: "tolist", torch.Tensor.item: "item", torch.Tensor.__bool__: "bool"}
_MOVES = {torch.Tensor.to, torch.Tensor.cuda}


class OnlyOn(TorchFunctionMode):
    def __init__(
        self,
        device: str | torch.device,
        reads: dict[str, Callable[[torch.Tensor], Any]] | None = None,
    ) -> None:
        super().__init__()
        self.device = torch.device(device)
        self.reads = reads or {}
        self.calls = 0
        self.host_reads: list[str] = []
        self.strays: list[str] = []
        self.moves: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name == "__get__":  # reading .device, .shape, .dtype: metadata, no computation
            return func(*args, **kwargs)
        self.calls += 1
        found = self.moves if func in _MOVES else self.strays
        for value in tree_flatten((args, kwargs))[0]:
            if isinstance(value, torch.Tensor) and value.device != self.device:
                found.append(f"{name}: {tuple(value.shape)} {value.dtype} on {value.device}")
        read = _READS.get(func)
        if read == "bool" and "bool" not in self.reads:  # answered only when asked to
            read = None
        if read is not None and args and args[0].device.type == "meta":
            self.host_reads.append(read)
            return self.reads[read](args[0])
        return func(*args, **kwargs)

"""A probe head on disk, and the scorer it gives: shared by the probe rewards
(:mod:`winnow.rewards.probe`, which run their own forward pass) and the engine's reward tap
(:mod:`winnow.engine.processors.tap`, which reads the states vLLM already computed).

A probe directory holds ``head.safetensors`` (``weight``/``bias`` for a linear head, or
``w1``/``b1``/``w2``/``b2`` for an MLP, in the ``[in, out]`` orientation) and ``probe.json``
(its kind, layer, position and output; see :mod:`winnow.rewards.probe`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from winnow.kernels.dispatch import reward_head
from winnow.kernels.heads import LinearHead, MLPHead, RewardHead

PROBE_META = "probe.json"
RowScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(hidden ``[N, H]``, rows ``[R]``) -> scores ``[R]`` or ``[R, 1]`` of those rows."""


def load_head(directory: Path) -> tuple[RewardHead, dict[str, Any]]:
    from safetensors.torch import load_file

    meta = json.loads((directory / PROBE_META).read_text())
    tensors = load_file(str(directory / "head.safetensors"))
    head: RewardHead
    if "w1" in tensors:
        head = MLPHead(tensors["w1"], tensors.get("b1"), tensors["w2"], tensors.get("b2"))
    else:
        head = LinearHead(tensors["weight"], tensors.get("bias"))
    return head, meta


def save_head(directory: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "head.safetensors"))
    (directory / PROBE_META).write_text(json.dumps(meta, indent=2) + "\n")


class PlacedHead:
    """A head placed where the states it scores are: cast to their device and dtype on first
    sight and kept per (device, dtype), so a GPU's bfloat16 states are scored on the GPU without
    a copy of them to the host or of the head on every call."""

    def __init__(self, head: RewardHead) -> None:
        self.head = head
        self.placed: dict[tuple[torch.device, torch.dtype], RewardHead] = {}

    def on(self, hidden: torch.Tensor) -> RewardHead:
        key = (hidden.device, hidden.dtype)
        placed = self.placed.get(key)
        if placed is None:
            placed = self.placed[key] = self.head.to(hidden.device, hidden.dtype)
        return placed


def head_scorer(head: RewardHead, sigmoid: bool) -> RowScorer:
    """The probe's scorer: its head on the given rows, through a sigmoid if its output is one.
    The head runs on the rows' device in their dtype (:class:`PlacedHead`), accumulating in
    float32 (:func:`winnow.kernels.reward_head`)."""
    placed = PlacedHead(head)

    def scorer(hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        values = reward_head(hidden, rows, placed.on(hidden))
        return torch.sigmoid(values) if sigmoid else values

    scorer.placed = placed  # type: ignore[attr-defined]  # where it went, for tests
    return scorer


def has_sigmoid(meta: dict[str, Any]) -> bool:
    return meta.get("output", "sigmoid") == "sigmoid"

"""Choose the Triton kernel or the torch reference for each call.

``auto`` (the default) runs Triton on CUDA tensors when triton is installed, torch elsewhere.
``WINNOW_KERNELS=auto|triton|torch`` sets the choice for the process; :func:`force_backend`
overrides it from code. Forcing ``triton`` on CPU tensors works only under ``TRITON_INTERPRET=1``
(Triton's interpreter, for tests) and raises otherwise; forcing it without triton installed raises.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Literal, cast

import torch

from ._triton import triton_available
from .confidence import token_confidence_torch
from .entropy import next_token_entropy_torch, next_token_entropy_triton
from .heads import RewardHead
from .prm_labels import prm_label_probs_torch, prm_label_probs_triton
from .reward_head import reward_head_torch, reward_head_triton

__all__ = [
    "ENV_VAR",
    "Backend",
    "force_backend",
    "next_token_entropy",
    "prm_label_probs",
    "reward_head",
    "selected_backend",
    "token_confidence",
]

Backend = Literal["auto", "triton", "torch"]

ENV_VAR = "WINNOW_KERNELS"
_BACKENDS: tuple[Backend, ...] = ("auto", "triton", "torch")

# Set by force_backend; None means "read WINNOW_KERNELS".
_forced: Backend | None = None


def _parse(value: str, origin: str) -> Backend:
    choice = value.strip().lower() or "auto"
    if choice not in _BACKENDS:
        raise ValueError(f"{origin} must be one of {', '.join(_BACKENDS)}; got {value!r}")
    return cast(Backend, choice)


def force_backend(backend: Backend) -> contextlib.AbstractContextManager[None]:
    """Use ``backend`` for every kernel call in this process, whatever ``WINNOW_KERNELS`` says.

    Takes effect at once. Used as a context manager (``with force_backend("torch"): ...``), it
    brings the previous choice back on exit.
    """
    global _forced
    previous, _forced = _forced, _parse(backend, "force_backend()")
    return _restore(previous)


@contextlib.contextmanager
def _restore(previous: Backend | None) -> Iterator[None]:
    global _forced
    try:
        yield
    finally:
        _forced = previous


def _configured() -> Backend:
    if _forced is not None:
        return _forced
    return _parse(os.environ.get(ENV_VAR, ""), ENV_VAR)


def selected_backend(device: torch.device) -> Literal["triton", "torch"]:
    """The implementation a call on tensors of ``device`` runs under the current setting."""
    configured = _configured()
    if configured == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    return configured


def reward_head(hidden: torch.Tensor, positions: torch.Tensor, head: RewardHead) -> torch.Tensor:
    """Score ``hidden[positions]`` with ``head``: fp32 ``[P]`` or ``[P, C]``.

    See :mod:`winnow.kernels.reward_head` (heads, NaN for padding positions).
    """
    if selected_backend(hidden.device) == "triton":
        return reward_head_triton(hidden, positions, head)
    return reward_head_torch(hidden, positions, head)


def prm_label_probs(
    hidden: torch.Tensor, positions: torch.Tensor, lm_head: torch.Tensor, label_ids: torch.Tensor
) -> torch.Tensor:
    """Softmax over the label tokens' logits at each position: fp32 ``[P, L]``.

    See :mod:`winnow.kernels.prm_labels`.
    """
    if selected_backend(hidden.device) == "triton":
        return prm_label_probs_triton(hidden, positions, lm_head, label_ids)
    return prm_label_probs_torch(hidden, positions, lm_head, label_ids)


def next_token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row's next-token distribution: fp32 ``[B]``.

    See :mod:`winnow.kernels.entropy` (masked ``-inf`` logits; an all ``-inf`` row gives NaN).
    """
    if selected_backend(logits.device) == "triton":
        return next_token_entropy_triton(logits)
    return next_token_entropy_torch(logits)


def token_confidence(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """DeepConf's token confidence of each row: ``-(1/k) * sum`` of its top-k log-probabilities,
    fp32 ``[B]``; the torch implementation on every backend (``topk`` and ``logsumexp`` are the
    device's own kernels).

    See :mod:`winnow.kernels.confidence` (a masked token among the top k gives ``+inf``; an all
    ``-inf`` row gives NaN).
    """
    return token_confidence_torch(logits, top_k)

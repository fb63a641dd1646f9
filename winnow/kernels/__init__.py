"""Fused kernels for reward-guided decoding, each with a torch reference of the same contract.

* :func:`reward_head`: gather rows of packed hidden states and apply a linear or MLP head.
* :func:`prm_label_probs`: a PRM's label-token probabilities, without full-vocabulary logits.
* :func:`next_token_entropy`: full-vocabulary next-token entropy, one streaming pass per row.
* :func:`token_confidence`: DeepConf's token confidence (negative mean top-k log-probability).

Triton runs on CUDA tensors, the torch reference elsewhere; ``WINNOW_KERNELS`` or
:func:`force_backend` overrides the choice (see :mod:`winnow.kernels.dispatch`). Triton is
imported lazily and optional: without it every call runs the torch reference.
"""

from .dispatch import (
    Backend,
    force_backend,
    next_token_entropy,
    prm_label_probs,
    reward_head,
    selected_backend,
    token_confidence,
)
from .heads import LinearHead, MLPHead, RewardHead
from .reward_head import last_token_positions

__all__ = [
    "Backend",
    "LinearHead",
    "MLPHead",
    "RewardHead",
    "force_backend",
    "last_token_positions",
    "next_token_entropy",
    "prm_label_probs",
    "reward_head",
    "selected_backend",
    "token_confidence",
]

"""Token confidence (DeepConf, Fu et al.): the negative mean log-probability of the top-k tokens.

``C(row) = -(1/k) * sum_{j <= k} log p_j`` over the ``k`` most likely tokens of
``p = softmax(row)``, in nats. It is high when the distribution is peaked (the top token takes
the mass, the other ``k - 1`` have very negative log-probabilities). Its lowest value is
``log k``, a row whose mass is split evenly over its top k; a uniform row gives ``log V``. So it
is not a function of the entropy, and at ``k = 1`` (``-log p_max``) it reads the other way, low
for a peaked row: DeepConf's ``k`` is 20.

Since ``log p_j = x_j - logsumexp(x)``, ``C = logsumexp(x) - mean(top-k x)``, computed on
``x - max(x)`` (no cancellation for large logits): a reduction and a top-k over the raw logits,
no log-softmax of the full row.

The confidence processor (:mod:`winnow.engine.processors.confidence`) calls this inside a vLLM
logits processor on every decoding step. There is no Triton kernel: ``torch.topk`` and
``torch.logsumexp`` already run as the device's own kernels (a radix select and one streaming
reduction on CUDA), and a fused version would save one read of the rows the request opted in.

Conventions:

* ``k`` larger than the vocabulary means the whole vocabulary.
* ``-inf`` logits are masked tokens. A masked token among the top ``k`` (fewer than ``k``
  candidates left, as with ``allowed_token_ids``) has log-probability ``-inf``: ``C = +inf``.
* A row of only ``-inf`` has no distribution: ``C`` is **NaN**. ``+inf`` or NaN logits give NaN.
"""

from __future__ import annotations

import torch

from ._common import check_float

__all__ = ["token_confidence_torch"]


def token_confidence_torch(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """``-(1/k) * sum of the top-k log-probabilities`` of ``softmax(logits[b])`` for each row;
    fp32 ``[B]``."""
    check_float("logits", logits, (2,))
    if logits.shape[1] == 0:
        raise ValueError("logits must have at least one vocabulary column")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    x = logits.float()
    if x.shape[0] == 0:
        return x.new_empty(0)
    k = min(top_k, x.shape[1])
    # relative to the row's max (the largest of the top k), so large logits do not cancel; an
    # all -inf row (max -inf) and a +inf or NaN logit make the shifted row NaN: no distribution.
    # One temporary the size of the logits, exponentiated in place (the engine runs this on
    # every decoding step).
    top = x.topk(k, dim=-1, sorted=False).values
    peak = top.amax(dim=-1, keepdim=True)
    shifted = x - peak
    shifted.exp_()
    return shifted.sum(dim=-1).log() - (top - peak).mean(dim=-1)

"""Reward heads that rank answers to the same question.

Selection (best-of-N, weighted vote) only ever compares answers to ONE question, so the head is
fitted with a within-question objective, cross-validated by question, and chosen on
within-question AUC:

* ``listwise``: a softmax over each question's answers, the correct ones as positives
  (the Q-probe objective): ``-log sum_{i correct} softmax(s)_i``;
* ``pairwise``: Bradley-Terry on every (correct, wrong) pair of a question;
* ``pointwise``: plain logistic regression on pooled answers (what the first default did), kept
  as the baseline.

A ranking head's scores have no absolute meaning, so the shipped head is calibrated afterwards by
Platt scaling on the pooled training answers (``P = sigmoid(a s + b)``, a > 0): monotone, so the
within-question order (and AUC) is unchanged, and the output is a probability that weighted votes
and CARDS' thresholds can use.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Objective = str  # "listwise" | "pairwise" | "pointwise" | "mlp" (pairwise, a ReLU hidden layer)


@dataclass(frozen=True, slots=True)
class Linear:
    """A linear head on raw (unstandardised) features: ``x @ weight + bias``."""

    weight: torch.Tensor
    bias: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias

    def scaled(self, a: float, b: float) -> Linear:
        """The head whose output is ``a * self(x) + b``."""
        return Linear(self.weight * a, self.bias * a + b)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight.contiguous(), "bias": torch.tensor([self.bias])}


@dataclass(frozen=True, slots=True)
class MLP:
    """A one-hidden-layer ReLU head on raw features, ``relu(x @ w1 + b1) @ w2 + b2``: what the
    served probe's :class:`winnow.kernels.heads.MLPHead` computes."""

    w1: torch.Tensor  # [in, hidden]
    b1: torch.Tensor  # [hidden]
    w2: torch.Tensor  # [hidden]
    b2: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w1 + self.b1) @ self.w2 + self.b2

    def scaled(self, a: float, b: float) -> MLP:
        return MLP(self.w1, self.b1, self.w2 * a, self.b2 * a + b)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"w1": self.w1.contiguous(), "b1": self.b1.contiguous(),
                "w2": self.w2.contiguous(), "b2": torch.tensor([self.b2])}  # fmt: skip


Head = Linear | MLP


def fit_mlp(
    x: torch.Tensor,
    y: torch.Tensor,
    qid: torch.Tensor,
    *,
    objective: str = "pairwise",
    hidden: int = 64,
    weight_decay: float = 0.1,
    dropout: float = 0.5,
    epochs: int = 150,
    seed: int = 0,
) -> MLP:
    """A ReLU MLP, full-batch AdamW on standardised features with input dropout, folded back to
    raw inputs. ``objective`` "pairwise": Bradley-Terry on each question's (y > 0.5, y < 0.5)
    pairs; "pointwise": binary cross-entropy on ``y`` pooled over every row (soft labels in
    [0, 1] allowed; ``qid`` unused)."""
    torch.manual_seed(seed)
    z, mean, std = standardised(x)
    loss: Callable[[torch.Tensor], torch.Tensor]
    if objective == "pairwise":
        zq, mask = _padded(z, qid)
        yq, _ = _padded(y.float(), qid)
        pos, neg = (yq > 0.5) & mask, (yq < 0.5) & mask
        useful = pos.any(1) & neg.any(1)
        if not bool(useful.any()):
            raise ValueError("no question has both a right and a wrong answer")
        inputs, pairs = zq[useful], (pos.unsqueeze(2) & neg.unsqueeze(1))[useful]

        def loss(s: torch.Tensor) -> torch.Tensor:
            return pair_loss(s, pairs)
    elif objective == "pointwise":
        inputs, target = z, y.float()

        def loss(s: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.binary_cross_entropy_with_logits(s, target)
    else:
        raise ValueError(f"unknown MLP objective {objective!r}")
    first, second = torch.nn.Linear(x.shape[1], hidden), torch.nn.Linear(hidden, 1)
    net = torch.nn.Sequential(torch.nn.Dropout(dropout), first, torch.nn.ReLU(), second)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=weight_decay)
    net.train()
    for _ in range(epochs):
        optimizer.zero_grad()
        loss(net(inputs).squeeze(-1)).backward()
        optimizer.step()
    with torch.no_grad():
        w1 = first.weight.T / std.unsqueeze(1)
        b1 = first.bias - (mean / std) @ first.weight.T
        return MLP(w1.clone(), b1.clone(), second.weight[0].clone(), float(second.bias))


def _padded(values: torch.Tensor, qid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-question rows: [Q, max answers] values and a mask of real entries."""
    _, inverse, counts = torch.unique(qid, return_inverse=True, return_counts=True)
    q, width = len(counts), int(counts.max())
    slot = torch.zeros_like(qid)
    seen = torch.zeros(q, dtype=torch.long)
    for i, g in enumerate(inverse.tolist()):
        slot[i] = seen[g]
        seen[g] += 1
    index = inverse * width + slot
    mask = torch.zeros(q * width, dtype=torch.bool)
    mask[index] = True
    out = values.new_zeros((q * width, *values.shape[1:]))
    out[index] = values
    return out.reshape(q, width, *values.shape[1:]), mask.reshape(q, width)


def standardised(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z, mean, std): features scaled to zero mean and unit variance per column."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    return (x - mean) / std, mean, std


def pair_loss(s: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry over each question's pairs: ``s`` [Q, n] scores, ``weight`` [Q, i, j] how
    much "i above j" counts; the weighted mean of softplus(s_j - s_i) per question, averaged."""
    diff = s.unsqueeze(2) - s.unsqueeze(1)  # [Q, i, j]: s_i - s_j
    return ((torch.nn.functional.softplus(-diff) * weight).sum((1, 2)) / weight.sum((1, 2))).mean()


def minimise(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    mean: torch.Tensor,
    std: torch.Tensor,
    l2: float,
    *,
    bias: bool,
    max_iter: int = 200,
) -> Linear:
    """The linear head (w, b) on standardised features minimising ``loss(w, b) + l2 |w|^2`` by
    LBFGS, folded back to raw inputs (its bias kept only with ``bias``)."""
    w = torch.zeros(len(mean), requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = loss(w, b) + l2 * (w * w).sum()
        value.backward()
        return value

    optimizer.step(closure)
    raw_w = (w / std).detach()
    raw_b = float((b - (w * mean / std).sum()).detach()) if bias else 0.0
    return Linear(raw_w, raw_b)


def fit(
    x: torch.Tensor,
    y: torch.Tensor,
    qid: torch.Tensor,
    objective: Objective,
    l2: float,
    max_iter: int = 200,
) -> Linear:
    """Fit a linear head with ``objective`` and L2 ``l2`` on standardised features."""
    z, mean, std = standardised(x)
    yf = y.float()
    if objective in ("listwise", "pairwise"):
        zq, mask = _padded(z, qid)
        yq, _ = _padded(yf, qid)
        pos = (yq > 0.5) & mask
        neg = (yq < 0.5) & mask
        useful = pos.any(1) & neg.any(1)  # a question with only right or only wrong teaches nothing
        zq, mask, pos, neg = zq[useful], mask[useful], pos[useful], neg[useful]
        if not bool(useful.any()):
            raise ValueError("no question has both a right and a wrong answer")
    big = torch.tensor(-1e9)

    def loss(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if objective == "listwise":
            s = zq @ w
            every = torch.logsumexp(torch.where(mask, s, big), 1)
            right = torch.logsumexp(torch.where(pos, s, big), 1)
            return (every - right).mean()
        if objective == "pairwise":
            return pair_loss(zq @ w, pos.unsqueeze(2) & neg.unsqueeze(1))
        p = yf.mean().clamp(1e-3, 1 - 1e-3)
        weight = torch.where(yf > 0.5, 0.5 / p, 0.5 / (1 - p))
        return torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, yf, weight)

    return minimise(loss, mean, std, l2, bias=objective == "pointwise", max_iter=max_iter)


def platt(scores: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(a, b) with ``sigmoid(a s + b)`` fitted to the labels (a kept positive)."""
    s = (scores - scores.mean()) / scores.std().clamp_min(1e-6)
    log_a = torch.zeros((), requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_a, b], max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(log_a.exp() * s + b, y.float())
        loss.backward()
        return loss

    optimizer.step(closure)
    a = float(log_a.detach().exp()) / float(scores.std().clamp_min(1e-6))
    return a, float(b.detach()) - a * float(scores.mean())


def calibrated(head: Head, x: torch.Tensor, y: torch.Tensor) -> Head:
    """The head folded with its Platt scaling: ``sigmoid(result(x))`` is P(correct)."""
    return head.scaled(*platt(head(x), y))


# ---- measures -----------------------------------------------------------------------------------


def auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """P(a right answer outscores a wrong one), ties half; None without both classes."""
    pairs = sorted(zip(scores, labels, strict=True))
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    if not n_pos or not n_neg:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        rank_sum += (i + j + 1) / 2 * sum(lab for _, lab in pairs[i:j])
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def within_auc(scores: torch.Tensor, y: torch.Tensor, qid: torch.Tensor) -> tuple[float, int]:
    """Mean over questions with both right and wrong answers of their AUC, and their count."""
    values = []
    for q in torch.unique(qid).tolist():
        sel = qid == q
        a = auc(_clean(scores[sel]), y[sel].tolist())
        if a is not None:
            values.append(a)
    return (statistics.fmean(values) if values else math.nan), len(values)


def _clean(scores: torch.Tensor) -> list[float]:
    return [(-math.inf if math.isnan(s) else s) for s in scores.tolist()]


def question_folds(qid: torch.Tensor, folds: int, seed: int = 0) -> list[torch.Tensor]:
    """Boolean test masks over samples, splitting QUESTIONS (not answers) into ``folds``."""
    questions = torch.unique(qid)
    order = questions[torch.randperm(len(questions), generator=torch.Generator().manual_seed(seed))]
    return [torch.isin(qid, order[k::folds]) for k in range(folds)]


def cross_validate(
    x: torch.Tensor,
    y: torch.Tensor,
    qid: torch.Tensor,
    objective: Objective,
    l2: float,
    folds: int = 5,
) -> float:
    """Within-question AUC of out-of-fold scores (folds split by question); ``objective``
    "mlp" fits :func:`fit_mlp` with weight decay ``l2``."""
    scores = torch.empty(len(y))
    for test in question_folds(qid, folds):
        head = fitted(x[~test], y[~test], qid[~test], objective, l2)
        scores[test] = head(x[test]).detach()
    return within_auc(scores, y, qid)[0]


def fitted(
    x: torch.Tensor, y: torch.Tensor, qid: torch.Tensor, objective: Objective, l2: float
) -> Head:
    """:func:`fit` for the linear objectives, :func:`fit_mlp` (pairwise, weight decay ``l2``)
    for "mlp"."""
    if objective == "mlp":
        return fit_mlp(x, y, qid, weight_decay=l2)
    return fit(x, y, qid, objective, l2)


def choose(
    x: torch.Tensor,
    y: torch.Tensor,
    qid: torch.Tensor,
    objectives: Sequence[Objective] = ("listwise", "pairwise", "pointwise"),
    grid: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1),
) -> tuple[tuple[Objective, float], dict[str, float]]:
    """The (objective, L2) with the best cross-validated within-question AUC, and all results."""
    results = {f"{o}@{l2:g}": cross_validate(x, y, qid, o, l2) for o in objectives for l2 in grid}
    best = max(results, key=lambda k: results[k])
    objective, l2 = best.split("@")
    return (objective, float(l2)), results


def learning_curve(
    x: torch.Tensor,
    y: torch.Tensor,
    qid: torch.Tensor,
    objective: Objective,
    l2: float,
    held: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    fractions: Sequence[float] = (0.125, 0.25, 0.5, 1.0),
) -> dict[str, float]:
    """Held-out (x, y, qid) within-question AUC when trained on the first k training questions,
    keyed by k."""
    questions = torch.unique(qid)
    curve = {}
    for frac in fractions:
        keep = questions[: max(4, int(len(questions) * frac))]
        sel = torch.isin(qid, keep)
        head = fitted(x[sel], y[sel], qid[sel], objective, l2)
        curve[str(len(keep))] = within_auc(head(held[0]), held[1], held[2])[0]
    return curve

"""`winnow train reward`: the default outcome reward, trained to rank answers to one question.

Data: the `winnow train samples` journal (N answers per training-split question, sampled from the
policy through the engine), labelled by the verifier. Features: the policy's final-layer hidden
state at the response's last token or at the last token of its final answer (the two positions
:class:`~winnow.rewards.probe.ProbeReward` can read; both are states the engine computes while it
writes the answer). The position, objective and L2 strength are chosen by 5-fold
cross-validation BY QUESTION on within-question AUC
(:mod:`winnow.train.ranking`); the chosen head is refitted on every training question and Platt-
calibrated, so its sigmoid output is P(correct) while its within-question order is the ranking's.

Held-out figures come from the quality benchmark's stored answers (evaluation split, questions
disjoint from training by the hash split of :mod:`winnow.train.tasks`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from winnow.rewards.probe import save_head
from winnow.train import datasets, ranking
from winnow.train.features import FeatureReader, extract

FEATURES = ("last", "answer")  # final-layer states the served probe can read (its `position`)
OBJECTIVES = ("listwise", "pairwise", "pointwise")
GRID = (1e-4, 1e-3, 1e-2, 1e-1)
MLP_DECAY = (1e-2, 1e-1)  # the ReLU MLP head (pairwise): weight decays tried


@dataclass(frozen=True, slots=True)
class Chosen:
    """The head chosen by cross-validation, refitted on every training question, calibrated."""

    feature: str
    objective: str
    l2: float
    cv: dict[str, float]  # within-question AUC by "feature/objective@l2"
    head: ranking.Head


def select_head(
    features: dict[str, torch.Tensor],
    y: torch.Tensor,
    qid: torch.Tensor,
    *,
    positions: tuple[str, ...] = FEATURES,
    mlp: bool = True,
    objectives: tuple[str, ...] = OBJECTIVES,
    grid: tuple[float, ...] = GRID,
) -> Chosen:
    """Choose the read position, objective and L2 by 5-fold cross-validation by question on
    within-question AUC; refit the best on all of ``y`` and Platt-calibrate it."""
    cv: dict[str, float] = {}
    for name in positions:
        if objectives:
            _, by_config = ranking.choose(features[name].float(), y, qid, objectives, grid)
            cv.update({f"{name}/{key}": value for key, value in by_config.items()})
        for decay in MLP_DECAY if mlp else ():
            cv[f"{name}/mlp@{decay:g}"] = ranking.cross_validate(
                features[name].float(), y, qid, "mlp", decay
            )
    if not cv:
        raise ValueError("no head to choose from: give objectives or the MLP")
    best = max(cv, key=lambda k: -1.0 if math.isnan(cv[k]) else cv[k])
    feature, rest = best.split("/")
    objective, l2_text = rest.split("@")
    l2 = float(l2_text)
    x = features[feature].float()
    head = ranking.calibrated(ranking.fitted(x, y, qid, objective, l2), x, y)
    return Chosen(feature, objective, l2, cv, head)


def train_outcome_head(
    model_dir: str | Path,
    out_dir: Path,
    journal: Path = datasets.TRAIN_JOURNAL,
    *,
    max_questions: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit, calibrate and save the head under ``out_dir``; returns its metrics."""
    started = time.monotonic()
    torch.manual_seed(seed)
    reader = FeatureReader(model_dir)
    train = datasets.train_rows(journal)[:max_questions]
    if not train:
        raise SystemExit(f"no samples in {journal}: run `winnow train samples` first")
    features = extract(reader, train, datasets.feature_dir())
    y, qid = datasets.labels(train), datasets.question_index(train)
    chosen = select_head(features, y, qid)
    feature, objective, l2, cv, head = (
        chosen.feature,
        chosen.objective,
        chosen.l2,
        chosen.cv,
        chosen.head,
    )
    x = features[feature].float()
    train_p = torch.sigmoid(head(x))
    metrics: dict[str, Any] = {
        "train_questions": len(train),
        "train_samples": len(y),
        "train_accuracy_of_samples": float(y.float().mean()),
        "train_questions_with_both": ranking.within_auc(y.float(), y, qid)[1],
        "feature": feature,
        "objective": objective,
        "l2": l2,
        "cv_within_auc": cv,
        "train_within_auc": ranking.within_auc(train_p, y, qid)[0],
    }
    if datasets.BENCH_ROWS.exists():
        bench = datasets.bench_rows()
        xb = extract(reader, bench, datasets.feature_dir())[feature].float()
        yb, qb = datasets.labels(bench), datasets.question_index(bench)
        pb = torch.sigmoid(head(xb))
        within, count = ranking.within_auc(pb, yb, qb)
        metrics.update(
            heldout_questions=len(bench),
            heldout_samples=len(yb),
            heldout_within_auc=within,
            heldout_questions_with_both=count,
            heldout_pooled_auc=ranking.auc(pb.tolist(), yb.tolist()),
            learning_curve=ranking.learning_curve(x, y, qid, objective, l2, (xb, yb, qb)),
        )
    r_star = float(torch.quantile(train_p, 0.75))
    kind_of_head = "a ReLU MLP head (64 hidden)" if objective == "mlp" else "a linear head"
    save_head(
        out_dir / "default",
        head.tensors(),
        {
            "kind": "outcome",
            "layer": -1,
            "position": feature,
            "output": "sigmoid",
            "backbone": "default",
            "description": f"P(correct) of a response: {kind_of_head} on SmolLM2-135M's final "
            f"hidden state at {WHERE_READ[feature]}, trained to rank answers to the same question "
            f"({'pairwise' if objective == 'mlp' else objective} objective over each question's "
            "verifier-labelled samples), then Platt-calibrated.",
            "metrics": metrics,
            "config": {"seed": seed, "journal": str(journal.name)},
            "calibration": {
                "r_star": round(r_star, 3),
                "r_star_log_odds": round(float(torch.logit(torch.tensor(r_star))), 3),
                "quantile": 0.75,
                "samples": len(y),
                "source": "75th percentile of this reward on its training samples (T=0.7, "
                "max_tokens 96); used by cards as its default r_star",
            },
        },
    )
    metrics["seconds"] = round(time.monotonic() - started, 1)
    return metrics


WHERE_READ = {
    "last": "the response's last token",
    "answer": "the last token of the response's final answer (the last token without one)",
}

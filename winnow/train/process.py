"""`winnow train prm`: the process reward head on Monte-Carlo step labels (Math-Shepherd).

Data (:mod:`winnow.train.steplabels`): the policy's own multi-step answers to training-split
questions, each step labelled by the success rate of k rollouts from its prefix (the last step by
the verifier's verdict), plus up to ``singles`` distinct single-step answers of the same questions
(their one step is labelled by the verdict: tree search's first step is often the whole answer).

Features: the policy's final-layer state, read exactly as the served process probe reads it
(prompt and steps tokenized as segments, :func:`winnow.rewards.probe.process_positions`).

Objective: ``pointwise`` (logistic regression on the soft labels), ``pairwise`` (Bradley-Terry
on the steps of one question whose values differ by at least ``MARGIN``, weighted by the
difference: beams of one question are what tree search compares) or ``mlp`` (a ReLU MLP with
cross-entropy on the soft labels, ``benchmarks/rewards/prm_heads.py``'s best head), at each
step's last token or at the last token of the result it states (``position``). Position,
objective and L2 (an MLP's weight decay) are chosen
by question-split cross-validation on the step AUC; the shipped head is Platt-calibrated so its
output reads as P(this prefix still reaches the answer).

Held out: the benchmark questions' step journal (evaluation split, never trained on): step AUC
against Math-Shepherd's hard labels (a step is good when any of its rollouts reaches the gold;
the last step by the verdict), pooled, within question, and on intermediate steps alone.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from winnow.rewards.backbone import Backbone
from winnow.rewards.base import STEP_DELIMITER, split_steps
from winnow.rewards.probe import process_positions, save_head
from winnow.train import ranking
from winnow.train.samples import QuestionSamples, is_right
from winnow.train.steplabels import QuestionSteps

POSITIONS = ("last", "answer")  # where the probe reads each step (ProbeReward's `position`)
OBJECTIVES = ("pointwise", "pairwise")
GRID = (1e-3, 1e-2, 1e-1)
MLP_HIDDEN = 128  # the "mlp" objective: a ReLU MLP, BCE on the step values (prm_heads.py's best)
MLP_DECAYS = (1e-1,)  # its weight decays tried (prm_heads.py chose 0.1 at 400 and 800 questions)
FEATURE_CACHE = Path.home() / ".cache" / "winnow" / "prm-features"
MARGIN = 0.25  # pairwise: steps whose values differ by less say little about their order


@dataclass(slots=True)
class StepSet:
    """Every labelled step: features, soft value, hard label, question, intermediate or not."""

    x: torch.Tensor
    value: torch.Tensor
    hard: torch.Tensor
    qid: torch.Tensor
    intermediate: torch.Tensor

    def __len__(self) -> int:
        return len(self.value)


def step_rows(
    labelled: Sequence[QuestionSteps],
) -> list[tuple[int, str, list[str], list[float], list[bool]]]:
    """(question index, prompt, steps, values, intermediate flags) per labelled solution."""
    rows = []
    for qi, q in enumerate(labelled):
        for sol in q.solutions:
            values = sol.values(q.gold)
            flags = [True] * (len(values) - 1) + [False]
            rows.append((qi, q.prompt, list(sol.steps), values, flags))
    return rows


def single_steps(
    labelled: Sequence[QuestionSteps],
    samples: Sequence[QuestionSamples],
    states: torch.Tensor,
    singles: int,
) -> StepSet:
    """Up to ``singles`` distinct single-step answers of each labelled question, labelled by the
    verdict. ``states`` holds every sample's final-layer state where the probe reads a one-step
    answer (the samples' cached ``last`` or ``answer`` features, :mod:`winnow.train.features`:
    the same tokens and positions as the served probe)."""
    index = {q.question: qi for qi, q in enumerate(labelled)}
    picked, values, qids = [], [], []
    row = 0
    for q in samples:
        seen: set[str] = set()
        for s in q.samples:
            if (
                q.question in index
                and len(seen) < singles
                and s.text not in seen
                and len(split_steps(s.text)) == 1
            ):
                seen.add(s.text)
                picked.append(row)
                values.append(float(is_right(s.text, q.gold)))
                qids.append(index[q.question])
            row += 1
    value = torch.tensor(values)
    return StepSet(states[picked].float(), value, (value > 0.5).long(), torch.tensor(qids),
                   torch.zeros(len(values), dtype=torch.bool))  # fmt: skip


def concat(*parts: StepSet) -> StepSet:
    return StepSet(*(torch.cat([getattr(p, f) for p in parts]) for f in StepSet.__slots__))


def read_features(
    backbone: Backbone,
    rows: Sequence[tuple[int, str, list[str], list[float], list[bool]]],
    position: str = "last",
) -> StepSet:
    """The states the served probe reads at ``position`` (:func:`process_positions`)."""
    from tqdm import tqdm

    xs: list[torch.Tensor] = []
    for start in tqdm(range(0, len(rows), 32), desc=f"step features ({position})", unit="batch"):
        jobs = [process_positions(backbone, r[1], r[2], position) for r in rows[start : start + 32]]
        encoded = backbone.encode_sequences([j.ids for j in jobs])
        xs.extend(e.hidden[list(j.positions)].clone() for e, j in zip(encoded, jobs, strict=True))
    labels = step_labels(rows)
    labels.x = torch.cat(xs).float()
    return labels


def journal_features(
    name: str, journal: Path, position: str, backbone: Callable[[], Backbone]
) -> StepSet:
    """A step journal's multi-step solutions' steps with the states the served probe reads at
    ``position``, cached under :data:`FEATURE_CACHE` keyed by the journal's content (a fresh
    clone's copy hits; one forward pass per journal and position, ~7 min each on 2 cores).
    ``backbone`` is called only on a miss."""
    from winnow.train.steplabels import read_steps

    rows = step_rows(read_steps(journal))
    data = step_labels(rows)
    digest = hashlib.sha256(journal.read_bytes()).hexdigest()[:16]
    key = f"{journal.name}:{digest}:{len(data)}"
    path = FEATURE_CACHE / f"{name}-{position}.pt"
    if path.exists():
        cached = torch.load(path)
        if cached["key"] == key:
            data.x = cached["x"]
            return data
    data.x = read_features(backbone(), rows, position).x
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "x": data.x}, path)
    return data


def step_labels(rows: Sequence[tuple[int, str, list[str], list[float], list[bool]]]) -> StepSet:
    """The rows' steps with their labels and no features yet (``x`` is empty)."""
    value = torch.tensor([v for r in rows for v in r[3]])
    inter = torch.tensor([f for r in rows for f in r[4]])
    # Math-Shepherd's hard estimate: a step is good when any rollout from it reaches the gold
    hard = torch.where(inter, value > 0, value > 0.5).long()
    qid = torch.tensor([r[0] for r in rows for _ in r[3]])
    return StepSet(torch.empty(len(value), 0), value, hard, qid, inter)


def fit(data: StepSet, objective: str, l2: float, max_iter: int = 200) -> ranking.Linear:
    """A linear head on standardised features, folded back to raw inputs."""
    z, mean, std = ranking.standardised(data.x)
    v = data.value
    if objective == "pairwise":
        zq, mask = ranking._padded(z, data.qid)
        vq, _ = ranking._padded(v, data.qid)
        gap = vq.unsqueeze(2) - vq.unsqueeze(1)  # [Q, i, j]: v_i - v_j
        weight = torch.where(gap >= MARGIN, gap, 0.0) * (mask.unsqueeze(2) & mask.unsqueeze(1))
        useful = weight.sum((1, 2)) > 0
        zq, weight = zq[useful], weight[useful]

    def loss(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if objective == "pairwise":
            return ranking.pair_loss(zq @ w, weight)
        return torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, v)

    return ranking.minimise(loss, mean, std, l2, bias=objective == "pointwise", max_iter=max_iter)


def fit_head(data: StepSet, objective: str, l2: float) -> ranking.Head:
    """A linear head (:func:`fit`), or for ``objective`` "mlp" a ReLU MLP with binary
    cross-entropy on the soft step values, ``l2`` its weight decay."""
    if objective == "mlp":
        return ranking.fit_mlp(data.x, data.value, data.qid, objective="pointwise",
                               hidden=MLP_HIDDEN, weight_decay=l2)  # fmt: skip
    return fit(data, objective, l2)


def subset(data: StepSet, keep: torch.Tensor) -> StepSet:
    return StepSet(data.x[keep], data.value[keep], data.hard[keep], data.qid[keep],
                   data.intermediate[keep])  # fmt: skip


def measures(scores: torch.Tensor, data: StepSet) -> dict[str, Any]:
    """Step AUC against the hard labels: pooled, within question, intermediate steps alone."""
    inter = data.intermediate
    within, questions = ranking.within_auc(scores, data.hard, data.qid)
    return {
        "steps": len(data),
        "intermediate_steps": int(inter.sum()),
        "step_auc": ranking.auc(scores.tolist(), data.hard.tolist()),
        "within_question_step_auc": within,
        "questions_with_both": questions,
        "intermediate_step_auc": ranking.auc(scores[inter].tolist(), data.hard[inter].tolist()),
        "soft_label_spearman": spearman(scores, data.value),
    }


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.argsort().argsort().float()
    rb = _ranks(b)
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share their mean rank)."""
    values = v.tolist()
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and values[order[j]] == values[order[i]]:
            j += 1
        for k in order[i:j]:
            out[k] = (i + j - 1) / 2
        i = j
    return torch.tensor(out)


def cross_validate(data: StepSet, objective: str, l2: float, folds: int = 5) -> float:
    """Pooled step AUC of out-of-fold scores (folds split questions). Pooled, not within a
    question: within one, a step's depth alone scores 0.71 on the held-out steps (early steps
    still have rollouts that reach the answer, a wrong final step has none)."""
    scores = torch.empty(len(data))
    for test in ranking.question_folds(data.qid, folds):
        scores[test] = fit_head(subset(data, ~test), objective, l2)(data.x[test]).detach()
    return float(ranking.auc(scores.tolist(), data.hard.tolist()) or 0.5)


def train_process_head(
    backbone: Backbone,
    train: Sequence[QuestionSteps],
    held: Sequence[QuestionSteps],
    out_dir: Path,
    *,
    singles: tuple[Sequence[QuestionSamples], dict[str, torch.Tensor]] | None = None,
    per_question: int = 8,
    features: Callable[[str, str], StepSet] | None = None,
) -> dict[str, Any]:
    """Choose (position x objective x L2 by cross-validated step AUC), fit, calibrate and save
    the process head under ``out_dir/default_prm``. ``singles``: the samples journal's questions
    and their cached features (``last``, ``answer``), from which the single-step answers are added
    (``per_question`` at most per question). ``features(which, position)`` ("train" / "held")
    gives the multi-step steps with their states (e.g. :func:`journal_features`, cached); by
    default they are read from ``train`` and ``held`` here."""
    if features is None:

        def features(which: str, position: str) -> StepSet:
            return read_features(backbone, step_rows(train if which == "train" else held), position)

    started = time.time()
    cv: dict[str, float] = {}
    sets: dict[str, tuple[StepSet, StepSet]] = {}
    for position in POSITIONS:
        data = features("train", position)
        if singles is not None:
            states = singles[1][position]
            data = concat(data, single_steps(train, singles[0], states, per_question))
        sets[position] = (data, features("held", position))
        for o, grid in (*((o, GRID) for o in OBJECTIVES), ("mlp", MLP_DECAYS)):
            for l2 in grid:
                cv[f"{position}/{o}@{l2:g}"] = cross_validate(data, o, l2)
    best = max(cv, key=cv.__getitem__)
    position, rest = best.split("/")
    objective, l2 = rest.split("@")[0], float(rest.split("@")[1])
    data, test = sets[position]
    head = ranking.calibrated(fit_head(data, objective, l2), data.x, (data.value > 0.5).long())
    metrics = {
        "train_questions": len(train),
        "train_solutions": sum(len(q.solutions) for q in train),
        "train_steps": len(data),
        "train_intermediate_steps": int(data.intermediate.sum()),
        "train_single_step_answers": len(data) - sum(len(r[3]) for r in step_rows(train)),
        "rollouts_per_step": _rollouts(train),
        "position": position,
        "objective": objective,
        "l2": l2,
        "cv_step_auc": cv,
        "heldout": measures(head(test.x), test),
        "heldout_questions": len(held),
        "seconds": round(time.time() - started, 1),
    }
    save_head(
        out_dir / "default_prm",
        head.tensors(),
        {
            "kind": "process",
            "layer": -1,
            "output": "sigmoid",
            "backbone": "default",
            "position": position,
            "step_delimiter": STEP_DELIMITER,
            "description": "P(the solution so far still reaches the right answer): "
            f"{'a ReLU MLP' if objective == 'mlp' else 'linear'} probe "
            f"on SmolLM2-135M's final hidden state at {_WHERE[position]}, trained on "
            "Monte-Carlo step labels (rollouts from the policy's own solution prefixes).",
            "metrics": metrics,
        },
    )
    return metrics


_WHERE = {"last": "each step's last token", "answer": "the last token of each step's result"}


def _rollouts(labelled: Sequence[QuestionSteps]) -> float:
    counts = [len(r) for q in labelled for s in q.solutions for r in s.rollouts]
    return statistics.fmean(counts) if counts else 0.0

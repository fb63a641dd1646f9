"""Does a non-linear head lift the process reward's held-out step AUC?

A head ablation for the process reward (issue: PRM held-out step AUC 0.75). The layer ablation
(:mod:`benchmarks.rewards.prm_layers`) found no layer above 0.661 with the shipped linear
pointwise head; the outcome reward gained from a ReLU MLP head
(:func:`winnow.train.ranking.fit_mlp`). This reads the final layer (what the engine's reward tap
serves) at the probe's positions (:func:`winnow.rewards.probe.process_positions`) on the
Monte-Carlo step journals and compares, by question-split cross-validated step AUC on the
training questions and step AUC on the held-out benchmark questions (never used to choose
anything):

1. ``linear-pointwise``: logistic regression on the soft step values (the shipped objective),
   L2 by CV; ``linear-pairwise`` (the trainer's other objective) for reference;
2. ``mlp-pointwise``: a ReLU MLP with BCE on the soft step values;
3. ``mlp-pairwise``: a ReLU MLP with Bradley-Terry on each question's (good, bad) step pairs, the
   label (Math-Shepherd's hard label, or value > 0.5) chosen by CV;

the MLPs' weight decay and hidden size chosen by CV, then a learning curve (25/50/100% of the
training questions, hyper-parameters fixed) for the best head by CV next to the linear baseline.
Multi-step solutions only (no single-step answers), as in :mod:`benchmarks.rewards.prm_layers`.

Features are cached under ``~/.cache/winnow/prm-features/`` (one forward pass per journal and
position, ~7 min each on 2 cores), so re-runs take seconds plus the fits.

    python -m benchmarks rewards prm_heads              # results/rewards/prm_heads.md
    python -m benchmarks rewards prm_heads --position answer last
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from winnow.train import process, ranking
from winnow.train.process import StepSet
from winnow.train.steplabels import BENCH_STEP_JOURNAL, STEP_JOURNAL

DECAYS = (1e-2, 1e-1, 1.0)
HIDDEN = (32, 64, 128)
LABELS = ("hard", "value>0.5")  # MLP pairwise: Math-Shepherd's hard label, or value > 0.5
FRACTIONS = (0.25, 0.5, 1.0)
SEEDS = 3  # held-out spread of the chosen MLPs over initialisation / dropout seeds
DRAWS = 3  # random draws of training questions per learning-curve fraction below 100%


def features(name: str, journal: Path, position: str) -> StepSet:
    """The journal's steps with the states the served probe reads (cached: see
    :func:`winnow.train.process.journal_features`, which ``winnow train prm`` shares)."""

    def backbone() -> Any:
        from winnow.models.default_model import build_default_model
        from winnow.rewards.backbone import Backbone
        from winnow.settings import default_data_dir

        return Backbone(build_default_model(default_data_dir()))

    return process.journal_features(name, journal, position, backbone)


Scorer = Callable[[torch.Tensor], torch.Tensor]
Fit = Callable[[StepSet, int], Scorer]  # (training steps, seed) -> head


def heads(
    hidden: tuple[int, ...] = HIDDEN,
    decays: tuple[float, ...] = DECAYS,
    labels: tuple[str, ...] = LABELS,
) -> dict[str, dict[str, Fit]]:
    """Every head's configurations (chosen among by CV), each a fit function."""

    def linear(objective: str, l2: float) -> Fit:
        return lambda d, seed: process.fit(d, objective, l2)

    def mlp(objective: str, label: str, hidden: int, decay: float) -> Fit:
        def fit(d: StepSet, seed: int) -> Scorer:
            y = {"value": d.value, "hard": d.hard, "value>0.5": (d.value > 0.5).long()}[label]
            return ranking.fit_mlp(d.x, y, d.qid, objective=objective, hidden=hidden,
                                   weight_decay=decay, seed=seed)  # fmt: skip

        return fit

    grid = [(h, wd) for h in hidden for wd in decays]
    return {
        "linear-pointwise": {f"l2={g:g}": linear("pointwise", g) for g in process.GRID},
        "linear-pairwise": {f"l2={g:g}": linear("pairwise", g) for g in process.GRID},
        "mlp-pointwise": {f"h={h} wd={wd:g}": mlp("pointwise", "value", h, wd) for h, wd in grid},
        "mlp-pairwise": {
            f"{label} h={h} wd={wd:g}": mlp("pairwise", label, h, wd)
            for label in labels
            for h, wd in grid
        },
    }


def cross_validate(data: StepSet, fit: Fit, folds: int = 5) -> float:
    """Pooled step AUC (hard labels) of out-of-fold scores, folds splitting questions: what
    :func:`winnow.train.process.cross_validate` measures, for any head."""
    scores = torch.empty(len(data))
    for test in ranking.question_folds(data.qid, folds):
        scores[test] = fit(process.subset(data, ~test), 0)(data.x[test]).detach()
    return float(ranking.auc(scores.tolist(), data.hard.tolist()) or 0.5)


def heldout_auc(fit: Fit, train: StepSet, held: StepSet, seed: int = 0) -> float:
    return float(ranking.auc(fit(train, seed)(held.x).detach().tolist(), held.hard.tolist()))


def learning_curve(fit: Fit, train: StepSet, held: StepSet, draws: int = 3) -> dict[str, Any]:
    """Held-out step AUC when trained on a random FRACTIONS of the training questions (mean of
    ``draws`` draws below 100%), hyper-parameters fixed."""
    questions = torch.unique(train.qid)
    curve = {}
    for frac in FRACTIONS:
        values = []
        for draw in range(1 if frac == 1.0 else draws):
            order = torch.randperm(len(questions), generator=torch.Generator().manual_seed(draw))
            keep = questions[order[: max(4, round(len(questions) * frac))]]
            part = process.subset(train, torch.isin(train.qid, keep))
            values.append(heldout_auc(fit, part, held))
        curve[f"{frac:g}"] = {"questions": max(4, round(len(questions) * frac)),
                              "step_auc": sum(values) / len(values), "draws": values}  # fmt: skip
    return curve


def compare(train: StepSet, held: StepSet, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"heads": {}}
    chosen_fits: dict[str, Fit] = {}
    for name, configs in heads(tuple(args.hidden), tuple(args.decay), tuple(args.labels)).items():
        if name not in args.heads:
            continue
        t0 = time.monotonic()
        cv = {cfg: cross_validate(train, fit) for cfg, fit in configs.items()}
        best = max(cv, key=cv.__getitem__)
        fit = chosen_fits[name] = configs[best]
        m = process.measures(fit(train, 0)(held.x).detach(), held)
        seeds = [m["step_auc"]]
        if name.startswith("mlp"):
            seeds += [heldout_auc(fit, train, held, s) for s in range(1, args.seeds)]
        out["heads"][name] = {"chosen": best, "cv_step_auc": cv[best], "cv": cv, **m,
                              "heldout_step_auc_seeds": seeds,
                              "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip
        print(f"{name:17s} {best:22s} cv {cv[best]:.3f}  held-out {m['step_auc']:.3f} "
              f"(seeds {min(seeds):.3f}-{max(seeds):.3f})  intermediate "
              f"{m['intermediate_step_auc']:.3f}  ({time.monotonic() - t0:.0f} s)",
              flush=True)  # fmt: skip
    best_head = max(out["heads"], key=lambda n: out["heads"][n]["cv_step_auc"])
    out["best_by_cv"] = best_head
    out["learning_curve"] = {
        name: learning_curve(chosen_fits[name], train, held, args.draws)
        for name in dict.fromkeys(
            (*(h for h in ("linear-pointwise",) if h in chosen_fits), best_head)
        )
    }
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--position", nargs="+", choices=process.POSITIONS, default=["answer"])
    p.add_argument("--extract-only", action="store_true", help="fill the feature cache, no fits")
    p.add_argument("--heads", nargs="+", choices=list(heads()), default=list(heads()))
    p.add_argument("--hidden", nargs="+", type=int, default=list(HIDDEN), help="MLP widths")
    p.add_argument("--decay", nargs="+", type=float, default=list(DECAYS), help="MLP decays")
    p.add_argument("--labels", nargs="+", choices=LABELS, default=list(LABELS),
                   help="MLP pairwise: which steps count as good")  # fmt: skip
    p.add_argument("--seeds", type=int, default=SEEDS, help="MLP held-out seeds (spread)")
    p.add_argument("--draws", type=int, default=DRAWS, help="learning-curve draws below 100%%")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--out", type=Path, default=common.results_dir("rewards") / "prm_heads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.monotonic()
    sets = {}
    for position in args.position:
        sets[position] = tuple(
            features(name, journal, position)
            for name, journal in (("train", STEP_JOURNAL), ("held", BENCH_STEP_JOURNAL))
        )
        print(f"features {position}: {time.monotonic() - started:.0f} s", flush=True)
    if args.extract_only:
        return
    results: dict[str, Any] = {"positions": {}}
    for position, (train, held) in sets.items():
        print(f"position {position}", flush=True)
        results["positions"][position] = compare(train, held, args)
    train, held = next(iter(sets.values()))
    results["train_steps"], results["held_steps"] = len(train), len(held)
    results["train_questions"] = len(torch.unique(train.qid))
    results["held_questions"] = len(torch.unique(held.qid))
    results["grid"] = {"hidden": args.hidden, "decay": args.decay, "labels": args.labels,
                       "seeds": args.seeds, "draws": args.draws}  # fmt: skip
    results["seconds"] = round(time.monotonic() - started, 1)
    results["command"] = common.command(__file__)
    common.save(args.out, results, report(results), script=__file__, argv=argv)


def report(results: dict[str, Any]) -> str:
    g = results["grid"]
    lines = [
        "# Process reward: does a non-linear head help? (head ablation)",
        "",
        f"Command: `{results['command']}` ({results['seconds']:.0f} s, features cached). "
        "Final layer (what the reward tap serves). Hyper-parameters by question-split 5-fold CV "
        f"(pooled step AUC) on the {results['train_steps']} training steps of "
        f"{results['train_questions']} questions; held out: {results['held_steps']} steps of the "
        f"{results['held_questions']} benchmark questions (never used to choose). Multi-step "
        "solutions only. MLP: one ReLU hidden layer, input dropout 0.5, AdamW, 150 epochs; "
        f"hidden in {g['hidden']}, weight decay in {g['decay']}; held-out range over "
        f"{g['seeds']} seeds.",
    ]
    for position, r in results["positions"].items():
        lines += [
            "",
            f"## Position `{position}`",
            "",
            "| head | chosen by CV | CV step AUC (train) | held-out step AUC | (seed range) | "
            "within question | intermediate steps |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in r["heads"].items():
            seeds = m["heldout_step_auc_seeds"]
            spread = f"{min(seeds):.3f}-{max(seeds):.3f}" if len(seeds) > 1 else "-"
            lines.append(
                f"| {name} | {m['chosen']} | {m['cv_step_auc']:.3f} | {m['step_auc']:.3f} | "
                f"{spread} | {m['within_question_step_auc']:.3f} | "
                f"{m['intermediate_step_auc']:.3f} |"
            )
        lines += [
            "",
            f"Learning curve (held-out step AUC; best head by CV: `{r['best_by_cv']}`; "
            f"fractions below 100%: mean of {g['draws']} random draws of training questions):",
            "",
            "| head | " + " | ".join(f"{f:.0%}" for f in FRACTIONS) + " |",
            "|---|" + "---|" * len(FRACTIONS),
        ]
        for name, curve in r["learning_curve"].items():
            cells = [f"{c['step_auc']:.3f} ({c['questions']} q)" for c in curve.values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

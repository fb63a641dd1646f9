"""Which reward head ranks answers to the same question best? Features x objectives, by question.

Reads the policy's own features of every training-split sample (`winnow train samples` journal)
and of every stored benchmark answer (`winnow/train/features.py`, cached per question), then:

1. for each feature set and objective (listwise / pairwise / pointwise), the L2 strength with the
   best 5-fold cross-validated within-question AUC on the TRAINING questions (folds split
   questions, not answers);
2. each configuration fitted on all training questions, Platt-calibrated (votes add
   probabilities, as the server's weighted votes do), and measured on the 200 benchmark
   problems: within-question AUC, pooled AUC, best-of-N and weighted-vote accuracy at N=8 and 32;
3. a learning curve of the selected configuration against the number of training questions.

The configuration is chosen on step 1 alone; the benchmark only reports.

    python -m benchmarks rewards lab          # -> results/rewards/reward_lab.md / .json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from benchmarks.quality import run as quality
from benchmarks.rewards import eval_reward
from winnow.models.default_model import build_default_model
from winnow.settings import default_data_dir
from winnow.train import datasets, ranking
from winnow.train.features import STATS, FeatureReader, extract

FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "last": ("last",),
    "mean": ("mean",),
    "answer": ("answer",),
    "layer15": ("layer15",),
    "layer20": ("layer20",),
    "stats": ("stats",),
    "last+stats": ("last", "stats"),
    "answer+stats": ("answer", "stats"),
    "layer20+last": ("layer20", "last"),
}


def matrix(features: dict[str, torch.Tensor], names: tuple[str, ...]) -> torch.Tensor:
    return torch.cat([features[n] for n in names], dim=1).float()


def bench_figures(scores: torch.Tensor, bench: list, bench_json: list) -> dict[str, Any]:
    """Within-question and pooled AUC, and accuracy of each rule at N=8 and N=32 (point
    estimates; the selected configuration gets the full tables with intervals)."""
    sizes = [len(q.samples) for q in bench]
    rows = eval_reward.rescored(bench_json, eval_reward.by_row(scores.tolist(), sizes))
    out: dict[str, Any] = dict(
        zip(("within_auc", "questions_with_both"),
            ranking.within_auc(scores, datasets.labels(bench), datasets.question_index(bench)),
            strict=True),
    )  # fmt: skip
    out["pooled_auc"] = ranking.auc(scores.tolist(), datasets.labels(bench).tolist())
    for n in (8, 32):
        for rule in ("majority", "best_of_n", "weighted_vote", "best_of_majority"):
            right = [
                quality.correct(
                    quality.select(rule, quality.to_candidates(eval_reward.candidates_of(r))[:n]),
                    r["problem"].answer,
                )
                for r in rows
            ]
            out[f"{rule}@{n}"] = sum(right) / len(right)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sets", nargs="+", default=list(FEATURE_SETS))
    p.add_argument("--objectives", nargs="+", default=["pairwise", "listwise", "pointwise"])
    p.add_argument("--grid", nargs="+", type=float, default=[1e-3, 1e-2, 1e-1])
    p.add_argument("--out", type=Path, default=common.results_dir("rewards") / "reward_lab")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    started = time.monotonic()
    reader = FeatureReader(build_default_model(default_data_dir()))
    train = datasets.train_rows()
    bench = datasets.bench_rows()
    bench_json = eval_reward.load_rows(datasets.BENCH_ROWS)
    assert [r["question"] for r in bench_json] == [q.question for q in bench]
    ftrain = extract(reader, train, datasets.feature_dir())
    fbench = extract(reader, bench, datasets.feature_dir())
    ytrain, qtrain = datasets.labels(train), datasets.question_index(train)
    ybench, qbench = datasets.labels(bench), datasets.question_index(bench)
    print(
        f"train: {len(train)} questions, {len(ytrain)} answers, {ytrain.float().mean():.3f} right;"
        f" bench: {len(bench)} questions, {len(ybench)} answers",
        flush=True,
    )
    results: dict[str, Any] = {
        "train_questions": len(train),
        "train_answers": len(ytrain),
        "train_accuracy": float(ytrain.float().mean()),
        "train_questions_with_both": ranking.within_auc(ytrain.float(), ytrain, qtrain)[1],
        "bench_questions": len(bench),
        "configs": {},
    }
    old_scores = torch.tensor([v for row in eval_reward.stored_scores(bench_json) for v in row])
    results["old_default"] = bench_figures(old_scores, bench, bench_json)
    for fs in args.sets:
        xt, xb = matrix(ftrain, FEATURE_SETS[fs]), matrix(fbench, FEATURE_SETS[fs])
        for objective in args.objectives:
            cv = {l2: ranking.cross_validate(xt, ytrain, qtrain, objective, l2) for l2 in args.grid}
            l2 = max(cv, key=lambda k: cv[k])
            head = ranking.calibrated(ranking.fit(xt, ytrain, qtrain, objective, l2), xt, ytrain)
            probs = torch.sigmoid(head(xb))  # votes add probabilities, as the server's do
            figures = bench_figures(probs, bench, bench_json)
            key = f"{fs}/{objective}"
            results["configs"][key] = {"cv_within_auc": cv[l2], "l2": l2, "cv": cv, **figures}
            print(
                f"{key:28s} cv {cv[l2]:.3f} (l2 {l2:g})  bench within {figures['within_auc']:.3f}"
                f"  bon@8 {figures['best_of_n@8']:.3f} wv@8 {figures['weighted_vote@8']:.3f}"
                f"  maj@8 {figures['majority@8']:.3f}",
                flush=True,
            )
    best = max(results["configs"], key=lambda k: results["configs"][k]["cv_within_auc"])
    results["selected"] = best
    fs, objective = best.split("/")
    l2 = results["configs"][best]["l2"]
    xt, xb = matrix(ftrain, FEATURE_SETS[fs]), matrix(fbench, FEATURE_SETS[fs])
    curve = ranking.learning_curve(xt, ytrain, qtrain, objective, l2, (xb, ybench, qbench))
    for k, within in curve.items():
        print(f"learning curve: {k} questions -> bench within AUC {within:.3f}", flush=True)
    results["learning_curve"] = curve
    results["seconds"] = round(time.monotonic() - started, 1)
    results["command"] = common.command(__file__)
    common.save(args.out, results, report(results), script=__file__, argv=argv)


def report(results: dict[str, Any]) -> str:
    lines = [
        "# Reward lab: which head ranks answers to one question",
        "",
        f"Command: `{results['command']}` ({results['seconds']:.0f} s)",
        "",
        f"Training: {results['train_questions']} training-split questions, "
        f"{results['train_answers']} sampled answers ({results['train_accuracy'] * 100:.1f}% "
        f"right; {results['train_questions_with_both']} questions have both right and wrong "
        f"answers). Benchmark: the {results['bench_questions']} stored problems x 32 answers "
        "(evaluation split). CV = 5-fold by question on the training set, within-question AUC; "
        "the selected configuration is the best CV, chosen before looking at the benchmark "
        "columns.",
        "",
        "| features / objective | L2 | CV within AUC | bench within AUC | bench pooled AUC "
        "| best_of_n @8 | weighted_vote @8 | best_of_n @32 | weighted_vote @32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    old = results["old_default"]
    lines.append(
        f"| old `default` (stored scores) | | | {old['within_auc']:.3f} | {old['pooled_auc']:.3f}"
        f" | {old['best_of_n@8'] * 100:.1f} | {old['weighted_vote@8'] * 100:.1f}"
        f" | {old['best_of_n@32'] * 100:.1f} | {old['weighted_vote@32'] * 100:.1f} |"
    )
    for key, c in sorted(results["configs"].items(), key=lambda kv: -kv[1]["cv_within_auc"]):
        mark = " **(selected)**" if key == results["selected"] else ""
        lines.append(
            f"| {key}{mark} | {c['l2']:g} | {c['cv_within_auc']:.3f} | {c['within_auc']:.3f} | "
            f"{c['pooled_auc']:.3f} | {c['best_of_n@8'] * 100:.1f} | "
            f"{c['weighted_vote@8'] * 100:.1f} | {c['best_of_n@32'] * 100:.1f} | "
            f"{c['weighted_vote@32'] * 100:.1f} |"
        )
    maj8, maj32 = old["majority@8"] * 100, old["majority@32"] * 100
    lines += [
        "",
        f"Majority vote on the same answers: {maj8:.1f}% at N=8, {maj32:.1f}% at N=32.",
        "",
        "Learning curve of the selected configuration (bench within-question AUC by number of "
        "training questions): "
        + ", ".join(f"{k}: {v:.3f}" for k, v in results["learning_curve"].items()),
        "",
        f"Feature `stats` = {', '.join(STATS)} (token log-probabilities of the response under "
        "the policy).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

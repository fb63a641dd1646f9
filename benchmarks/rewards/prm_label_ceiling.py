"""How much do the Monte-Carlo step labels themselves allow? A split-half check.

The held-out PRM figure is step AUC against Math-Shepherd's hard label (a step is good when any
of its k rollouts reaches the gold answer). A predictor that knew half of a step's rollouts (their
success rate) predicting the label made from the other half shows what the labels allow, noise
included: if it scores far above a head, the head's limit is what the policy's state carries, not
the labels. Intermediate steps only (a last step is labelled by its own verdict, which a "half"
would know exactly). Lower bound of a perfect predictor's AUC (it sees only k/2 rollouts).

    python -m benchmarks rewards prm_label_ceiling  # seconds; results/rewards/prm_label_ceiling.md
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from benchmarks import common
from winnow.train.ranking import auc
from winnow.train.samples import is_right
from winnow.train.steplabels import BENCH_STEP_JOURNAL, STEP_JOURNAL, read_steps


def split_half(journal: Path, splits: int, seed: int = 0) -> dict[str, float | int | None]:
    """AUC of the first half's success rate for the second half's "any success", over
    intermediate steps, averaged over ``splits`` random splits of each step's rollouts."""
    steps: list[list[bool]] = []
    for q in read_steps(journal):
        for sol in q.solutions:
            for j, texts in enumerate(sol.rollouts):
                prefix = "".join(sol.steps[: j + 1])
                if len(texts) >= 2:
                    steps.append([is_right(prefix + t, q.gold) for t in texts])
    rng = random.Random(seed)
    aucs = []
    for _ in range(splits):
        scores, labels = [], []
        for outcomes in steps:
            order = rng.sample(outcomes, len(outcomes))
            half = len(order) // 2
            scores.append(sum(order[:half]) / half)
            labels.append(int(any(order[half:])))
        aucs.append(auc(scores, labels))
    valid = [a for a in aucs if a is not None]
    return {
        "intermediate_steps": len(steps),
        "rollouts_per_step": sum(len(s) for s in steps) / max(len(steps), 1),
        "split_half_auc": sum(valid) / len(valid) if valid else None,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--splits", type=int, default=20)
    p.add_argument("--out", type=Path, default=common.results_dir("rewards") / "prm_label_ceiling")
    args = p.parse_args(argv)
    results = {
        "held_out": split_half(BENCH_STEP_JOURNAL, args.splits),
        "train": split_half(STEP_JOURNAL, args.splits),
        "command": common.command(__file__),
    }
    lines = [
        "# Process reward: what the Monte-Carlo labels allow (split-half check)",
        "",
        f"Command: `{results['command']}`. For each intermediate step, half of its rollouts' "
        "success rate scores the hard label made from the other half (any success); AUC over "
        f"steps, mean of {args.splits} random splits. A lower bound on what a perfect predictor "
        "of the label gets (it would know all rollouts).",
        "",
        *common.md_table(
            ("journal", "intermediate steps", "rollouts per step", "split-half step AUC"),
            (
                (name, r["intermediate_steps"], f"{r['rollouts_per_step']:.1f}",
                 f"{r['split_half_auc']:.3f}")
                for name, r in ((n, results[n]) for n in ("held_out", "train"))
            ),
        ),
    ]  # fmt: skip
    common.save(args.out, results, "\n".join(lines) + "\n", script=__file__, argv=argv)


if __name__ == "__main__":
    main()

"""speculative_rejection with a late first decision, evaluated exactly on stored answers.

With ``rejection_rate: 1`` and a ``first_decision`` of T tokens, speculative rejection keeps the
candidates that finished within T tokens and aborts every one still running there (keeping the
client's n best by partial score only when fewer than n have finished). Candidates are seeded one
by one (``seed + i``), as best_of_n's are, so on the stored answers of the quality benchmark (200
problems x 32 answers of one best_of_n request each, scored by the shipped ``default``) the
strategy's choice is known without an engine: the best-scored answer among those of at most T
tokens, its cost the finished answers' tokens plus T + 1 for each aborted one (the decision waits
until every running candidate is past T). Where no answer finished within T the strategy would
pick by partial score, which the stored rows lack: counted as wrong (reported; none at N >= 8).

Printed: accuracy and mean generated tokens for N in 4..32 and T in 16..48 against best_of_n at
the same N (paired bootstrap over problems), and the accuracy-vs-tokens curves (plot).

    python -m benchmarks speculative late_rejection   # seconds; late_rejection_offline.*
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.adaptive import offline as adaptive
from benchmarks.common import bootstrap, paired_diff
from winnow.strategies.parts.selection import rank_best

NS = (4, 8, 16, 32)
CUTS = (16, 20, 24, 32, 48)


def late_rejection(problem: Any, n: int, cut: int | None) -> tuple[bool, int, bool]:
    """(right, generated tokens, no answer finished within the cut) of one problem's first n."""
    pairs = list(zip(problem.cands[:n], problem.right[:n], strict=True))
    lengths = [len(c.completion.token_ids) for c, _ in pairs]
    if cut is None:
        kept = pairs
        tokens = sum(lengths)
    else:
        kept = [p for p, t in zip(pairs, lengths, strict=True) if t <= cut]
        tokens = sum(t if t <= cut else cut + 1 for t in lengths)
    if not kept:
        return False, tokens, True
    best = rank_best([c for c, _ in kept])[0]
    return next(r for c, r in kept if c is best), tokens, False


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    problems = adaptive.load(args.rows, args.tasks, args.problems)[: args.first]
    table: dict[str, Any] = {}
    for n in NS:
        base = [late_rejection(p, n, None) for p in problems]
        base_right = [float(r) for r, _, _ in base]
        base_tokens = statistics.fmean(t for _, t, _ in base)
        table[str(n)] = {"best_of_n": {"accuracy": statistics.fmean(base_right),
                                       "ci95": list(bootstrap(base_right)),
                                       "tokens": base_tokens}}  # fmt: skip
        for cut in CUTS:
            rows = [late_rejection(p, n, cut) for p in problems]
            right = [float(r) for r, _, _ in rows]
            tokens = statistics.fmean(t for _, t, _ in rows)
            diff, lo, hi = paired_diff(right, base_right)
            table[str(n)][f"T{cut}"] = {
                "accuracy": statistics.fmean(right),
                "ci95": list(bootstrap(right)),
                "tokens": tokens,
                "fewer_tokens": base_tokens / tokens,
                "vs_best_of_n": [diff, lo, hi],
                "none_finished": sum(1 for _, _, none in rows if none),
            }
    by_length: dict[str, list[int]] = {}  # tokens bucket -> [answers, right]
    for p in problems:
        for c, right in zip(p.cands, p.right, strict=True):
            t = len(c.completion.token_ids)
            key = f"{16 * (t // 16)}-{16 * (t // 16) + 15}" if t < 96 else ">=96"
            cell = by_length.setdefault(key, [0, 0])
            cell[0], cell[1] = cell[0] + 1, cell[1] + int(right)
    return {
        "right_by_length": by_length,
        "rows": common.shown(args.rows),
        "problems": len(problems),
        "table": table,
        "command": common.command(__file__),
    }


def pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def report(summary: dict[str, Any]) -> str:
    lines = [
        "# speculative_rejection with a late first decision, on stored answers",
        "",
        f"Command: `{summary['command']}` (no engine). {summary['problems']} problems x 32 stored "
        f"answers (`{summary['rows']}`), scored by the shipped `default`; `T`: the first decision "
        "point with `rejection_rate: 1` (every candidate still running there aborted). Paired "
        "differences to best_of_n at the same N, points [95% bootstrap over problems].",
        "",
        "| N | config | accuracy % [95%] | tokens / problem | fewer tokens | vs best_of_n@N "
        "[95%] | no answer within T |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, cells in summary["table"].items():
        for name, c in cells.items():
            acc = f"{100 * c['accuracy']:.1f} [{100 * c['ci95'][0]:.1f}, {100 * c['ci95'][1]:.1f}]"
            if name == "best_of_n":
                lines.append(f"| {n} | best_of_n | {acc} | {c['tokens']:.0f} | | | |")
                continue
            d, lo, hi = c["vs_best_of_n"]
            lines.append(
                f"| {n} | first_decision {name[1:]} | {acc} | {c['tokens']:.0f} | "
                f"{c['fewer_tokens']:.2f}x | {pts(d)} [{pts(lo)}, {pts(hi)}] | "
                f"{c['none_finished']} |"
            )
    lines += ["", "Single answers right, by their length in tokens (all 32 x problems):", "",
              "| tokens | answers | right |", "|---|---|---|"]  # fmt: skip

    def start(key: str) -> int:
        return int(key.split("-")[0]) if "-" in key else 96

    for key, (count, right) in sorted(
        summary["right_by_length"].items(), key=lambda kv: start(kv[0])
    ):
        lines.append(f"| {key} | {count} | {100 * right / count:.1f}% |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = ["best_of_n", *(f"T{c}" for c in CUTS)]
    for name in series:
        xs = [summary["table"][str(n)][name]["tokens"] for n in NS]
        ys = [100 * summary["table"][str(n)][name]["accuracy"] for n in NS]
        style = "o-" if name == "best_of_n" else "s--"
        label = "best_of_n" if name == "best_of_n" else f"first_decision {name[1:]}"
        ax.plot(xs, ys, style, label=label)
    for n in NS:
        cell = summary["table"][str(n)]["best_of_n"]
        ax.annotate(f"N={n}", (cell["tokens"], 100 * cell["accuracy"]), textcoords="offset points",
                    xytext=(4, -12))  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("mean generated tokens per problem (log scale)")
    ax.set_ylabel("accuracy %")
    ax.set_title("best_of_n vs speculative_rejection (rejection_rate 1) at N = 4, 8, 16, 32")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--rows", type=Path, default=common.results_dir("quality") / "quality.rescored.jsonl"
    )
    p.add_argument("--tasks", nargs="+", default=["add_sub_1digit", "mul_1digit"])
    p.add_argument("--problems", type=int, default=200, help="the journal's problem count")
    p.add_argument(
        "--first", type=int, default=None, help="only the first K problems (a live run's subset)"
    )
    p.add_argument(
        "--out", type=Path, default=common.results_dir("speculative") / "late_rejection_offline"
    )
    args = p.parse_args(argv)
    summary = evaluate(args)
    plot(summary, args.out.with_suffix(".png"))
    common.save(args.out, summary, report(summary), script=__file__, argv=argv,
                also=[args.out.with_suffix(".png")])  # fmt: skip


if __name__ == "__main__":
    main()

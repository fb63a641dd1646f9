"""Plot a ``quality compare`` run: accuracy against mean generated tokens per problem.

One point per configuration, its 95% interval as a bar.

    python -m benchmarks quality plot_tokens benchmarks/results/speculative/compare_speculative.json

The plot joins the compare run's manifest entry.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import common


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("summary", type=Path, help="a quality compare summary (.json)")
    p.add_argument("--out", type=Path, default=None, help="default: the summary's name, .png")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = json.loads(args.summary.read_text())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, r in summary["results"].items():
        family = r["strategy"]["name"]
        low, high = r["ci95"]
        acc = 100 * r["accuracy"]
        ax.errorbar(
            r["generated_tokens"], acc, yerr=[[acc - 100 * low], [100 * high - acc]],
            fmt="o" if family == "best_of_n" else "s", capsize=3,
            color="tab:blue" if family == "best_of_n" else "tab:orange",
        )  # fmt: skip
        ax.annotate(label, (r["generated_tokens"], acc), textcoords="offset points", xytext=(5, 4))
    ax.set_xscale("log")
    ax.set_xlabel("mean generated tokens per problem (kept and discarded, log scale)")
    ax.set_ylabel("accuracy % (95% interval)")
    ax.set_title(f"{summary['problems']} problems: best_of_n (circles) vs others (squares)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = args.out or args.summary.with_suffix(".png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    common.record([out], script=__file__, argv=argv, extends=args.summary)


if __name__ == "__main__":
    main()

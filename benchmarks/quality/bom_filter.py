"""Best-of-majority's frequency filter at the N people use, measured on stored answers (no engine).

The published filter keeps answers with frequency >= alpha (alpha = 0.01): below N = 100 every
answer passes, and the rule becomes "the answer with the best mean reward". This script compares
a few filters declared BEFORE looking at any result, on the quality benchmark's journal
(``winnow/train/data/quality.rows.jsonl``: 200 problems x 32 answers, each with its reward score,
extracted answer and group, as the server returned them). For N = 4, 8, 16, 32 every rule sees
the first N answers of the same 32 (nested, paired), and is compared with majority vote on the
same answers (paired bootstrap over problems, 95%).

Every rule is a count threshold ``max(min_count, ceil(alpha * N))`` capped at the largest group's
size (so when no answer is that frequent, the most frequent ones pass), then the passing groups
are ranked by mean score, exactly as ``winnow.strategies.parts.selection.pick_best_of_majority``
does
(the script calls it). The rules (fixed in advance):

* ``published``: alpha 0.01, min_count 1 (the paper's filter);
* ``repeated``: alpha 0.01, min_count 2 (only answers given more than once; issue 13's proposal);
* ``alpha_0.1``: alpha 0.1, min_count 1 (the README's earlier suggestion);
* ``repeated_alpha_0.1``: alpha 0.1, min_count 2.

The criterion (also fixed in advance): the default is the rule with the highest paired accuracy
difference to majority vote averaged over N = 4, 8, 16, 32 (equal weights: it should help at
every N people use, not at one); a rule whose 95% interval lies wholly below zero at some N is
out; rules within 1 point of the best are a tie, broken towards the rule closest to the published
one (the order above). The filters count answers only, so the choice does not depend on the
reward's score scale; the table "sensitivity" re-runs the rules with each score replaced by its
rank among the problem's N answers (a reward retrained to any monotone rescaling of these scores
gives the same ranks), for information only: it does not enter the choice.

    python -m benchmarks quality bom_filter    # writes benchmarks/results/quality/bom_filter.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.common import paired_diff
from benchmarks.quality import run
from winnow.strategies.parts.selection import (
    Candidate,
    groups_of,
    majority_threshold,
    pick_best_of_majority,
    pick_by_groups,
    rank_best,
)

NS = (4, 8, 16, 32)
RULES: dict[str, tuple[float, int]] = {  # name -> (alpha, min_count)
    "published": (0.01, 1),
    "repeated": (0.01, 2),
    "alpha_0.1": (0.1, 1),
    "repeated_alpha_0.1": (0.1, 2),
}
TIE_POINTS = 1.0


def load(journal: Path) -> list[tuple[list[Candidate], list[bool]]]:
    """Every problem's 32 candidates (in sampling order) and whether each is right."""
    args = argparse.Namespace(tasks=["add_sub_1digit", "mul_1digit"], problems=200)
    items = run.problem_set(args)
    out = []
    for row, problem in run.read_journal(journal, items):
        cands = run.to_candidates(row["body"]["winnow"]["candidates"])
        out.append((cands, [run.correct(c, problem.answer) for c in cands]))
    return out


def ranked(cands: Sequence[Candidate]) -> list[Candidate]:
    """The same candidates with each score replaced by its rank among them (1 = lowest; ties
    share their mean rank; unscored stay unscored), divided by N: a scale-free reward."""
    scored = sorted((c.score, c.completion.index) for c in cands if c.score is not None)
    rank: dict[float, float] = {}
    i = 0
    while i < len(scored):
        j = i
        while j < len(scored) and scored[j][0] == scored[i][0]:
            j += 1
        rank[scored[i][0]] = (i + j + 1) / 2
        i = j
    n = len(cands)
    return [replace(c, score=None if c.score is None else rank[c.score] / n) for c in cands]


Pick = Callable[[Sequence[Candidate]], Candidate]


def picks() -> dict[str, Pick]:
    out: dict[str, Pick] = {
        "majority": lambda cs: pick_by_groups(cs, 1, "majority")[0],
        "best_of_n": lambda cs: rank_best(cs)[0],
    }
    for name, (alpha, min_count) in RULES.items():
        out[name] = lambda cs, a=alpha, m=min_count: pick_best_of_majority(cs, 1, a, min_count=m)[
            0
        ][0]
    return out


def evaluate(
    problems: Sequence[tuple[list[Candidate], list[bool]]], scale_free: bool = False
) -> dict[str, Any]:
    rules = picks()
    acc: dict[str, dict[int, list[float]]] = {r: {n: [] for n in NS} for r in rules}
    passed: dict[str, dict[int, list[int]]] = {r: {n: [] for n in NS} for r in RULES}
    for cands, right in problems:
        for n in NS:
            subset = ranked(cands[:n]) if scale_free else cands[:n]
            for rule, pick in rules.items():
                acc[rule][n].append(float(right[pick(subset).completion.index]))
            for rule, (alpha, min_count) in RULES.items():
                need = majority_threshold(subset, alpha, min_count)
                passed[rule][n].append(sum(g.count >= need for g in groups_of(subset)))
    table: dict[str, Any] = {}
    for rule in rules:
        table[rule] = {}
        for n in NS:
            cell: dict[str, Any] = {"accuracy": statistics.fmean(acc[rule][n])}
            if rule != "majority":
                diff, lo, hi = paired_diff(acc[rule][n], acc["majority"][n])
                cell["vs_majority"] = [diff, lo, hi]
            if rule in RULES:
                cell["groups_passed_mean"] = statistics.fmean(passed[rule][n])
            table[rule][str(n)] = cell
    return table


def choose(table: dict[str, Any]) -> tuple[str, dict[str, float], list[str]]:
    """The criterion stated in the module docstring; (choice, mean difference per rule, out)."""
    means = {
        rule: statistics.fmean(table[rule][str(n)]["vs_majority"][0] for n in NS) for rule in RULES
    }
    out = [r for r in RULES if any(table[r][str(n)]["vs_majority"][2] < 0 for n in NS)]
    eligible = [r for r in RULES if r not in out] or list(RULES)
    best = max(means[r] for r in eligible)
    tied = [r for r in RULES if r in eligible and means[r] >= best - TIE_POINTS / 100]
    return tied[0], means, out


def report(main: dict[str, Any], sens: dict[str, Any], problems: int) -> str:
    choice, means, out = choose(main)
    s_choice, s_means, _ = choose(sens)

    def pts(x: float) -> str:
        return f"{x * 100:+.1f}"

    lines = [
        "# best_of_majority: which frequency filter",
        "",
        "Command: `python -m benchmarks quality bom_filter` (no engine, no server: the stored "
        "answers of `winnow/train/data/quality.rows.jsonl`, reward `default`, judged by the "
        "verifier against the gold answers of `winnow/train/tasks.py`).",
        "",
        f"{problems} problems x 32 answers; at each N the first N answers (nested). A group "
        "passes with at least max(min_count, ceil(alpha * N)) members, capped at the largest "
        "group's size; passing groups are ranked by mean score "
        "(`winnow.strategies.parts.selection.pick_best_of_majority`).",
        "",
        "Criterion, fixed before the run: highest paired difference to majority vote averaged "
        "over N = 4, 8, 16, 32; a rule whose 95% interval is wholly below 0 at some N is out; "
        f"within {TIE_POINTS:g} point of the best, the rule closest to the published one wins "
        "(order: published, repeated, alpha_0.1, repeated_alpha_0.1).",
        "",
        "## Accuracy % and paired difference to majority vote, points [95% CI]",
        "",
        "| rule (alpha, min_count) | " + " | ".join(f"N={n}" for n in NS) + " | mean diff |",
        "|---|" + "---|" * (len(NS) + 1),
    ]
    for rule in ("majority", "best_of_n", *RULES):
        cells = []
        for n in NS:
            cell = main[rule][str(n)]
            text = f"{cell['accuracy'] * 100:.1f}"
            if "vs_majority" in cell:
                d, lo, hi = cell["vs_majority"]
                text += f" ({pts(d)} [{pts(lo)}, {pts(hi)}])"
            cells.append(text)
        label = f"{rule} {RULES[rule]}" if rule in RULES else rule
        mean = pts(means[rule]) if rule in RULES else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean} |")
    lines += [
        "",
        "Groups that pass the filter, mean per problem:",
        "",
        "| rule | " + " | ".join(f"N={n}" for n in NS) + " |",
        "|---|" + "---|" * len(NS),
    ]
    for rule in RULES:
        cells = [f"{main[rule][str(n)]['groups_passed_mean']:.1f}" for n in NS]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"**Choice: `{choice}`** (mean difference to majority {pts(means[choice])} points"
        + (f"; out by the interval rule: {', '.join(out)}" if out else "")
        + f"). `best_of_majority` ships alpha {RULES[choice][0]:g}, min_count "
        f"{RULES[choice][1]} (`winnow.strategies.parts.selection.MIN_COUNT`).",
        "",
        "## Sensitivity (not used for the choice): scores replaced by their within-problem rank",
        "",
        "| rule | " + " | ".join(f"N={n}" for n in NS) + " | mean diff |",
        "|---|" + "---|" * (len(NS) + 1),
    ]
    for rule in ("best_of_n", *RULES):
        cells = []
        for n in NS:
            d, lo, hi = sens[rule][str(n)]["vs_majority"]
            cells.append(f"{sens[rule][str(n)]['accuracy'] * 100:.1f} ({pts(d)})")
        mean = pts(s_means[rule]) if rule in RULES else ""
        lines.append(f"| {rule} | " + " | ".join(cells) + f" | {mean} |")
    lines += ["", f"The same criterion on ranks would choose `{s_choice}`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--journal", type=Path, default=common.QUALITY_ROWS)
    p.add_argument("--out", type=Path, default=common.results_dir("quality") / "bom_filter.md")
    args = p.parse_args(argv)
    problems = load(args.journal)
    main_table = evaluate(problems)
    sens_table = evaluate(problems, scale_free=True)
    text = report(main_table, sens_table, len(problems))
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(
        json.dumps({"rules": RULES, "scores": main_table, "ranks": sens_table}, indent=2) + "\n"
    )
    print(text)
    sys.stdout.flush()
    common.record([args.out, args.out.with_suffix(".json")], script=__file__, argv=argv)


if __name__ == "__main__":
    main()

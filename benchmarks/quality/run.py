"""The quality benchmark: accuracy of selection strategies vs N, through the real HTTP server.

For every problem, ONE `best_of_n` request with N_max candidates and `return_candidates: true`
goes to a running winnow server; it returns every candidate with its reward score and answer
group. Accuracy for smaller N is computed on the first N candidates (nested subsets, so curves
are paired), for each selection rule:

* sample (the first candidate), majority vote, best-of-N (best score), weighted vote,
  best-of-majority (k=1, alpha=0.01), and pass@N (any candidate right: the ceiling).

Correctness is judged by the rule-based verifier against the gold answer (never by the reward
that guided the selection). The server's own choice at N_max is checked against the offline
recomputation, so the numbers are the server's. 95% intervals: bootstrap over problems.

    python -m benchmarks quality run --base-url http://127.0.0.1:8000/v1 --problems 200 --n 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from benchmarks import common
from benchmarks.common import bootstrap, paired_diff
from winnow.answers.final import equivalent
from winnow.engine.base import Completion
from winnow.strategies.parts.selection import (
    Candidate,
    pick_best_of_majority,
    pick_by_groups,
    rank_best,
)
from winnow.train.tasks import TASKS, problems

NS = (1, 2, 4, 8, 16, 32)
RULES = ("sample", "majority", "best_of_n", "weighted_vote", "best_of_majority", "pass@n")


def to_candidates(returned: Sequence[dict[str, Any]]) -> list[Candidate]:
    """The server's returned candidates, as the strategies' own selection code sees them."""
    out = []
    for c in sorted(returned, key=lambda c: c["index"]):
        completion = Completion(c["index"], c["text"], [0] * c["tokens"], c["finish_reason"])
        out.append(Candidate(completion, c["score"], c["answer"], c["group"]))
    return out


def select(rule: str, cands: Sequence[Candidate], alpha: float = 0.01) -> Candidate | None:
    """One choice by ``rule``, with winnow/strategies/parts/selection.py's own functions."""
    if rule == "sample":
        return cands[0]
    if rule == "best_of_n":
        return rank_best(cands)[0]
    if rule == "majority":  # as the server votes: no reward, ties to the earlier answer
        unscored = [Candidate(c.completion, None, c.answer, c.group) for c in cands]
        return pick_by_groups(unscored, 1, "majority")[0]
    if rule == "weighted_vote":
        return pick_by_groups(cands, 1, "weighted_vote")[0]
    chosen, _ = pick_best_of_majority(cands, 1, alpha)
    return chosen[0] if chosen else None


def correct(candidate: Candidate | None, gold: str) -> bool:
    return bool(candidate and candidate.answer is not None and equivalent(candidate.answer, gold))


async def ask(
    client: httpx.AsyncClient, model: str, messages: list[dict], args: argparse.Namespace, seed: int
) -> tuple[dict[str, Any], float]:
    payload = {
        "model": model,
        "messages": messages,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": seed,
        "strategy": {
            "name": "best_of_n",
            "n": args.n,
            "reward": args.reward,
            "selection": "best",
            "return_candidates": True,
        },
    }
    started = time.perf_counter()
    r = await client.post("/chat/completions", json=payload)
    r.raise_for_status()
    return r.json(), time.perf_counter() - started


def auc(pos: Sequence[float], neg: Sequence[float]) -> float | None:
    """P(a right answer's score > a wrong one's), ties half (Mann-Whitney, by ranks)."""
    if not pos or not neg:
        return None
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        mid = (i + j + 1) / 2  # average 1-based rank of the tie block
        rank_sum += mid * sum(flag for _, flag in ranked[i:j])
        i = j
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def reward_auc(rows: Sequence[dict[str, Any]]) -> dict[str, float | int | None]:
    """How well the reward separates right from wrong answers: pooled over all problems (what
    a model card reports) and within one problem (what choosing among its N answers needs)."""
    pooled: tuple[list[float], list[float]] = ([], [])
    within = []
    for row in rows:
        pos, neg = [], []
        for c in to_candidates(row["body"]["winnow"]["candidates"]):
            (pos if correct(c, row["problem"].answer) else neg).append(c.score or 0.0)
        pooled[0].extend(pos)
        pooled[1].extend(neg)
        if (value := auc(pos, neg)) is not None:
            within.append(value)
    return {
        "pooled": auc(*pooled),
        "within_question_mean": statistics.fmean(within) if within else None,
        "problems_with_right_and_wrong": len(within),
    }


def problem_set(args: argparse.Namespace) -> list[Any]:
    """The benchmark's problems, in journal order (a row's ``i`` indexes this list).

    ``--fresh`` drops the 200 questions of the stored benchmark run (seed 0) and takes others
    from the evaluation split: a live check on questions no reward was chosen on."""
    per_task = args.problems // len(args.tasks)
    if not getattr(args, "fresh", False):
        return [p for t in args.tasks for p in problems(t, "eval", per_task)]
    stored = {p.question for t in args.tasks for p in problems(t, "eval", 100)}
    out = []
    for t in args.tasks:
        pool = [p for p in problems(t, "eval", 100 + per_task, seed=1) if p.question not in stored]
        out.extend(pool[:per_task])
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Ask the server about every problem; each answer is appended to ``<out>.rows.jsonl`` as it
    arrives, so a long run that stops resumes where it was (``--resume``) with the same seeds."""
    items = problem_set(args)
    journal = args.out.with_suffix(".rows.jsonl")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done: dict[int, dict[str, Any]] = {}
    if args.resume and journal.exists():
        for line in journal.read_text().splitlines():
            row = json.loads(line)
            done[row["i"]] = row
    elif journal.exists():
        journal.unlink()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = asyncio.Semaphore(args.concurrency)
    args.resumed_rows = len(done)  # their wall time is estimated from their latencies
    rows: list[dict[str, Any]] = [
        {"problem": items[i], "body": r["body"], "seconds": r["seconds"]} for i, r in done.items()
    ]
    async with httpx.AsyncClient(base_url=args.base_url, headers=headers, timeout=3600) as client:
        model = (await client.get("/models")).json()["data"][0]["id"]
        bar = tqdm(
            total=len(items), initial=len(done), desc=f"best_of_n N={args.n}", unit="problem"
        )

        async def one(i: int, problem: Any) -> None:
            async with limits:
                body, seconds = await ask(client, model, problem.messages, args, args.seed + i)
            rows.append({"problem": problem, "body": body, "seconds": seconds})
            record = {"i": i, "question": problem.question, "body": body, "seconds": seconds}
            with journal.open("a") as f:
                f.write(json.dumps(record) + "\n")
            bar.update(1)

        started = time.perf_counter()
        todo = [(i, p) for i, p in enumerate(items) if i not in done]
        await asyncio.gather(*(one(i, p) for i, p in todo))
        wall = (
            time.perf_counter()
            - started
            + sum(r["seconds"] for r in done.values()) / max(args.concurrency, 1)
        )
        bar.close()
    raw = [{"question": r["problem"].question, "answer": r["problem"].answer,
            "seconds": r["seconds"], "body": r["body"]} for r in rows]  # fmt: skip
    args.out.with_suffix(".raw.json").write_text(json.dumps({"wall": wall, "rows": raw}))
    return summarise(rows, args, wall)


def read_journal(path: Path, items: Sequence[Any]) -> list[tuple[dict[str, Any], Any]]:
    """A rows journal's rows (``<out>.rows.jsonl``), each with its problem: ``items[row["i"]]``
    (:func:`problem_set` of the run that wrote it), checked against the row's question."""
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            problem = items[row["i"]]
            assert problem.question == row["question"], (problem.question, row["question"])
            out.append((row, problem))
    return out


def from_journal(args: argparse.Namespace) -> dict[str, Any]:
    items = problem_set(args)
    lines = args.out.with_suffix(".rows.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    rows = [{"problem": items[r["i"]], "body": r["body"], "seconds": r["seconds"]} for r in rows]
    wall = sum(r["seconds"] for r in rows) / max(args.concurrency, 1)  # estimated, as resumed
    summary = summarise(rows, args, wall)
    summary["command"] = (
        common.command(__file__, [a for a in sys.argv[1:] if a != "--report-only"])
        + " (answers; resumable with --resume), then the same with --report-only (this summary)"
    )
    return summary


def summarise(rows: list[dict[str, Any]], args: argparse.Namespace, wall: float) -> dict[str, Any]:
    rows.sort(key=lambda r: r["problem"].question)
    ns = [n for n in NS if n <= args.n]
    per: dict[str, dict[int, list[float]]] = {rule: {n: [] for n in ns} for rule in RULES}
    tokens: dict[int, list[int]] = {n: [] for n in ns}
    agree = 0
    for row in rows:
        returned = row["body"]["winnow"]["candidates"]
        cands = to_candidates(returned)
        gold = row["problem"].answer
        chosen = next(c["index"] for c in returned if c["chosen"])
        agree += chosen == rank_best(cands)[0].completion.index
        for n in ns:
            subset = cands[:n]
            tokens[n].append(sum(len(c.completion.token_ids) for c in subset))
            for rule in RULES:
                if rule == "pass@n":
                    ok = any(correct(c, gold) for c in subset)
                else:
                    ok = correct(select(rule, subset), gold)
                per[rule][n].append(float(ok))
    table = {
        rule: {
            str(n): {"accuracy": statistics.fmean(v), "ci95": bootstrap(v)} for n, v in by_n.items()
        }
        for rule, by_n in per.items()
    }
    comparisons = {}
    for n in ns:
        for rule in ("weighted_vote", "best_of_majority", "best_of_n"):
            mean, lo, hi = paired_diff(per[rule][n], per["majority"][n])
            comparisons[f"{rule}-majority@{n}"] = {"diff": mean, "ci95": [lo, hi]}
    return {
        "config": {k: v for k, v in vars(args).items() if k not in {"api_key"}},
        "problems": len(rows),
        "tasks": {t: TASKS[t][0] for t in args.tasks},
        "server_choice_matches_offline_best": agree / max(len(rows), 1),
        "wall_seconds": wall,
        "seconds_per_request": {
            "median": statistics.median(r["seconds"] for r in rows),
            "p95": sorted(r["seconds"] for r in rows)[int(0.95 * (len(rows) - 1))],
        },
        "generated_tokens_per_problem": {str(n): statistics.fmean(v) for n, v in tokens.items()},
        "reward_tokens_per_request": statistics.fmean(
            r["body"]["usage"]["winnow"]["reward_tokens"] for r in rows
        ),
        "accuracy": table,
        "vs_majority": comparisons,
        "reward_auc": reward_auc(rows),
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
        "command": common.command(__file__),
    }


def report(summary: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [int(n) for n in summary["accuracy"]["sample"]]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for rule in RULES:
        acc = [summary["accuracy"][rule][str(n)]["accuracy"] * 100 for n in ns]
        ax.plot(ns, acc, marker="o", label=rule, linestyle="--" if rule == "pass@n" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("N (candidates)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{summary['problems']} problems, reward '{summary['config']['reward']}'")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)

    lines = [
        "# Quality: accuracy vs N",
        "",
        f"Command: `{summary['command']}`",
        "",
        f"{summary['problems']} problems ({', '.join(summary['config']['tasks'])}; evaluation "
        "split, disjoint from the reward's training questions), judged by the verifier.",
        "",
        "| rule | " + " | ".join(f"N={n}" for n in ns) + " |",
        "|---|" + "---|" * len(ns),
    ]
    for rule in RULES:
        cells = []
        for n in ns:
            cell = summary["accuracy"][rule][str(n)]
            lo, hi = cell["ci95"]
            cells.append(f"{cell['accuracy'] * 100:.1f} [{lo * 100:.0f}, {hi * 100:.0f}]")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    lines += ["", "Paired difference vs majority vote (points, 95% bootstrap interval):", ""]
    for key, cmp in summary["vs_majority"].items():
        lo, hi = cmp["ci95"]
        lines.append(f"- {key}: {cmp['diff'] * 100:+.1f} [{lo * 100:+.1f}, {hi * 100:+.1f}]")
    check = (
        "Scores re-computed offline on the stored answers (python -m benchmarks rewards "
        "eval_reward): "
        "no generation, no server."
        if summary["config"].get("rescored_offline")
        else f"Server's choice = offline best-of-N recomputation: "
        f"{summary['server_choice_matches_offline_best'] * 100:.0f}% of problems."
    )
    lines += [
        "",
        check,
        f"Wall time {summary['wall_seconds']:.0f} s; per request median "
        f"{summary['seconds_per_request']['median']:.1f} s, p95 "
        f"{summary['seconds_per_request']['p95']:.1f} s (N={summary['config']['n']}).",
        f"Reward tokens per request: {summary['reward_tokens_per_request']:.0f}.",
        f"Reward AUC (right vs wrong answers): pooled {summary['reward_auc']['pooled']:.3f}, "
        f"within a problem {summary['reward_auc']['within_question_mean']:.3f} (mean over the "
        f"{summary['reward_auc']['problems_with_right_and_wrong']} problems with both): "
        "selection needs the second.",
        "",
        f"![accuracy vs N]({out.with_suffix('.png').name})",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    p.add_argument("--api-key", default=None)
    p.add_argument("--tasks", nargs="+", default=["add_sub_1digit", "mul_1digit"])
    p.add_argument("--problems", type=int, default=200)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--reward", default="default")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="40 problems, N=8: a few minutes")
    p.add_argument(
        "--fresh", action="store_true", help="questions outside the stored 200-problem run"
    )
    p.add_argument(
        "--resume", action="store_true", help="keep the answers already in <out>.rows.jsonl"
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="no server: summarise the answers already in <out>.rows.jsonl",
    )
    p.add_argument("--out", type=Path, default=common.results_dir("quality") / "quality")
    args = p.parse_args(argv)
    if args.quick:
        args.problems, args.n = min(args.problems, 40), min(args.n, 8)
    summary = from_journal(args) if args.report_only else asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    report(summary, args.out)
    print(args.out.with_suffix(".md").read_text())
    written = (".json", ".md", ".png", ".raw.json", ".rows.jsonl")
    common.record([args.out.with_suffix(s) for s in written], script=__file__, argv=argv)


if __name__ == "__main__":
    main()

"""Compare strategy configurations side by side: accuracy and compute, on the same problems.

Every named configuration answers every problem through a running winnow server (one chat
request each, same seed per problem for all configurations; the requests of one problem are sent
in a rotating order so that machine noise is shared). Per configuration:

* accuracy, judged by the rule-based verifier against the gold answer (``winnow.answers.final``;
never
  the reward that guided the search), with a 95% bootstrap interval over problems;
* the paired difference to a baseline configuration, with its 95% bootstrap interval;
* mean generated tokens (``usage.winnow``: kept AND discarded), engine calls, reward calls and
  reward tokens per request; median and p95 wall time per request.

Configurations are presets (below: adding one is one line) or a JSON file, either
``{"label": {"name": "best_of_n", "n": 4}, ...}`` or ``[{"label": ..., "strategy": {...}}]``.

    python -m benchmarks quality compare --base-url http://127.0.0.1:8000/v1 --quick
    python -m benchmarks quality compare --configs bon4 beam4x2 beam4x2_er16 --problems 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from benchmarks import common
from benchmarks.common import bootstrap, paired_diff
from benchmarks.quality import run as quality_run
from winnow.answers.final import equivalent, extract_answer
from winnow.train.tasks import TASKS, Problem, problems

# label -> the request's "strategy" object. One line per preset.
PRESETS: dict[str, dict[str, Any]] = {
    "sample": {"name": "sample"},
    "bon4": {"name": "best_of_n", "n": 4, "reward": "default"},
    "bon8": {"name": "best_of_n", "n": 8, "reward": "default"},
    "bon16": {"name": "best_of_n", "n": 16, "reward": "default"},
    "bon64": {"name": "best_of_n", "n": 64, "reward": "default"},
    "bon4_prm": {"name": "best_of_n", "n": 4, "reward": "default_prm"},  # tree search's reward
    "beam4x2": {"name": "tree_search", "n": 4, "beam_width": 2},
    "beam4x2_er16": {"name": "tree_search", "n": 4, "beam_width": 2, "partial_tokens": 16},
    "dvts4x2": {"name": "tree_search", "n": 4, "beam_width": 2, "mode": "dvts"},
    # the PRM prunes, the outcome reward picks among the finished beams
    "beam4x2_orm": {"name": "tree_search", "n": 4, "beam_width": 2, "final_reward": "default"},
    "beam4x2_er16_orm": {
        "name": "tree_search",
        "n": 4,
        "beam_width": 2,
        "partial_tokens": 16,
        "final_reward": "default",
    },
    "dvts4x2_orm": {
        "name": "tree_search",
        "n": 4,
        "beam_width": 2,
        "mode": "dvts",
        "final_reward": "default",
    },
    "wv4": {"name": "best_of_n", "n": 4, "reward": "default", "selection": "weighted_vote"},
    "wv8": {"name": "best_of_n", "n": 8, "reward": "default", "selection": "weighted_vote"},
    "cards": {"name": "cards", "reward": "default"},
    "cards_hard": {"name": "cards", "reward": "default", "acceptance": "hard"},
    # speculative rejection: N started, half the running ones aborted every 8 tokens (answers
    # here are ~30 tokens long)
    "sr8": {"name": "speculative_rejection", "n": 8, "interval": 8},
    "sr16": {"name": "speculative_rejection", "n": 16, "interval": 8},
    "sr32": {"name": "speculative_rejection", "n": 32, "interval": 8},
    "sr16_i16": {"name": "speculative_rejection", "n": 16, "interval": 16},
    # a late first decision (near the answers' length, ~30 tokens here) that aborts every
    # candidate still running there ("_all": rejection_rate 1) or half of them
    "sr8_f24_all": {
        "name": "speculative_rejection",
        "n": 8,
        "first_decision": 24,
        "rejection_rate": 1.0,
    },
    "sr16_f24": {"name": "speculative_rejection", "n": 16, "first_decision": 24, "interval": 8},
    "sr16_f20_all": {
        "name": "speculative_rejection",
        "n": 16,
        "first_decision": 20,
        "rejection_rate": 1.0,
    },
    "sr16_f24_all": {
        "name": "speculative_rejection",
        "n": 16,
        "first_decision": 24,
        "rejection_rate": 1.0,
    },
    "sr32_f24_all": {
        "name": "speculative_rejection",
        "n": 32,
        "first_decision": 24,
        "rejection_rate": 1.0,
    },
    "vas1": {"name": "vas", "values": {"default": 1.0}},
    "vas3": {"name": "vas", "values": {"default": 3.0}},
    "vas10": {"name": "vas", "values": {"default": 10.0}},
}
DEFAULT_CONFIGS = ["sample", "bon4", "bon8", "beam4x2", "beam4x2_er16", "dvts4x2", "cards", "vas3"]
"""What a run without --configs compares (the README's strategy table)."""


def load_configs(names: list[str], path: Path | None) -> dict[str, dict[str, Any]]:
    configs: dict[str, dict[str, Any]] = {}
    if path is not None:
        raw = json.loads(path.read_text())
        if isinstance(raw, dict):
            configs.update(raw)
        else:
            configs.update({c["label"]: c["strategy"] for c in raw})
    for name in names:
        if name not in PRESETS and name not in configs:
            known = ", ".join([*PRESETS, *configs])
            raise SystemExit(f"unknown configuration {name!r}; known: {known}")
        configs.setdefault(name, PRESETS.get(name, {}))
    if names:
        configs = {name: configs[name] for name in names}
    return configs


def is_correct(text: str, gold: str) -> bool:
    answer = extract_answer(text)
    return answer is not None and equivalent(answer, gold)


async def ask(
    client: httpx.AsyncClient,
    model: str,
    problem: Problem,
    strategy: dict[str, Any],
    args: argparse.Namespace,
    seed: int,
) -> dict[str, Any]:
    payload = {
        "model": model,
        "messages": problem.messages,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": seed,
        "strategy": strategy,
    }
    started = time.perf_counter()
    r = await client.post("/chat/completions", json=payload)
    seconds = time.perf_counter() - started
    if r.status_code != 200:
        raise RuntimeError(f"{strategy} -> {r.status_code}: {r.text[:500]}")
    body = r.json()
    text = body["choices"][0]["message"]["content"] or ""
    usage = body["usage"]["winnow"]
    return {
        "question": problem.question,
        "gold": problem.answer,
        "text": text,
        "answer": extract_answer(text),
        "correct": is_correct(text, problem.answer),
        "seconds": seconds,
        "usage": usage,
        "details": (body.get("winnow") or {}).get("details"),
    }


async def run(
    args: argparse.Namespace, configs: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    per_task = max(args.problems // len(args.tasks), 1)
    if args.fresh:  # `quality run --fresh`'s questions in its order: problem i, seed args.seed + i
        items = quality_run.problem_set(args)
    else:
        items = [p for t in args.tasks for p in problems(t, "eval", per_task, seed=args.seed)]
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    labels = list(configs)
    rows: dict[str, list[dict[str, Any] | None]] = {label: [None] * len(items) for label in labels}
    limits = asyncio.Semaphore(args.concurrency)
    async with httpx.AsyncClient(base_url=args.base_url, headers=headers, timeout=3600) as client:
        model = (await client.get("/models")).json()["data"][0]["id"]
        bar = tqdm(total=len(items) * len(labels), desc="requests", unit="req")

        async def one(i: int, label: str) -> None:
            async with limits:
                row = await ask(client, model, items[i], configs[label], args, args.seed + i)
            rows[label][i] = row
            bar.update(1)
            bar.set_postfix_str(label)

        # problem by problem, the configurations in a rotating order
        order = [
            (i, labels[(i + k) % len(labels)])
            for i in range(len(items))
            for k in range(len(labels))
        ]
        started = time.perf_counter()
        await asyncio.gather(*(one(i, label) for i, label in order))
        wall = time.perf_counter() - started
        bar.close()
        done = {label: [r for r in rs if r is not None] for label, rs in rows.items()}
        if args.score_with:  # after the timed part: the returned answers under a reward
            await score_answers(client, items, done, args.score_with)
    return summarise(done, configs, args, wall, len(items)), done


async def score_answers(
    client: httpx.AsyncClient,
    items: list[Problem],
    rows: dict[str, list[dict[str, Any]]],
    reward: str,
) -> None:
    """Score every returned answer with ``reward`` (``POST /v1/rewards``, one call per config):
    how the guiding reward rates what each strategy chose, beside the verifier's accuracy."""
    messages = {p.question: p.messages for p in items}
    for rs in rows.values():
        body = {
            "reward": reward,
            "items": [{"messages": messages[r["question"]], "response": r["text"]} for r in rs],
        }
        r = await client.post("/rewards", json=body)
        r.raise_for_status()
        for row, scored in zip(rs, r.json()["data"], strict=True):
            row["reward"] = scored["score"]


def summarise(
    rows: dict[str, list[dict[str, Any]]],
    configs: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    wall: float,
    count: int,
) -> dict[str, Any]:
    def mean_usage(rs: list[dict[str, Any]], key: str) -> float:
        return statistics.fmean(r["usage"].get(key, 0) for r in rs)

    table: dict[str, Any] = {}
    for label, rs in rows.items():
        acc = [float(r["correct"]) for r in rs]
        seconds = sorted(r["seconds"] for r in rs)
        table[label] = {
            "strategy": configs[label],
            "accuracy": statistics.fmean(acc),
            "ci95": bootstrap(acc),
            "generated_tokens": mean_usage(rs, "generated_tokens"),
            "engine_calls": mean_usage(rs, "engine_calls"),
            "reward_calls": mean_usage(rs, "reward_calls"),
            "reward_tokens": mean_usage(rs, "reward_tokens"),
            "reward_cached_tokens": mean_usage(rs, "reward_cached_tokens"),
            "cached_fraction": sum(r["usage"]["cached_tokens"] for r in rs)
            / max(sum(r["usage"]["prefilled_tokens"] for r in rs), 1),
            "seconds_median": statistics.median(seconds),
            "seconds_p95": seconds[int(0.95 * (len(seconds) - 1))],
        }
        if all(r.get("reward") is not None for r in rs):
            table[label]["reward"] = statistics.fmean(r["reward"] for r in rs)
    baseline = args.baseline if args.baseline in rows else next(iter(rows))
    base = [float(r["correct"]) for r in rows[baseline]]
    base_tokens = table[baseline]["generated_tokens"]
    for label, rs in rows.items():
        diff, lo, hi = paired_diff([float(r["correct"]) for r in rs], base)
        table[label]["vs_baseline"] = {"diff": diff, "ci95": [lo, hi]}
        table[label]["tokens_vs_baseline"] = table[label]["generated_tokens"] / max(base_tokens, 1)
    return {
        "problems": count,
        "tasks": {t: TASKS[t][0] for t in args.tasks},
        "baseline": baseline,
        "config": {k: v for k, v in vars(args).items() if k not in {"api_key", "config_file"}},
        "wall_seconds": wall,
        "results": table,
        "load_average": os.getloadavg(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "command": common.command(__file__),
    }


def report(summary: dict[str, Any]) -> str:
    base = summary["baseline"]
    lines = [
        "# Strategy comparison: accuracy and compute",
        "",
        f"Command: `{summary['command']}`",
        "",
        f"{summary['problems']} problems ({', '.join(summary['config']['tasks'])}; evaluation "
        f"split), max_tokens {summary['config']['max_tokens']}, temperature "
        f"{summary['config']['temperature']}; correctness by the verifier against the gold "
        "answer. Intervals: 95% bootstrap over problems; differences are paired with the "
        f"baseline `{base}`.",
        "",
        f"| config | accuracy % [95% CI] | vs {base} (points) [95% CI] | generated tokens "
        "(x base) | engine calls | reward calls | reward tokens (+ reused) | prefix-cached | "
        "wall p50 / p95 (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in summary["results"].items():
        lo, hi = r["ci95"]
        d = r["vs_baseline"]
        dlo, dhi = d["ci95"]
        lines.append(
            f"| {label} | {r['accuracy'] * 100:.1f} [{lo * 100:.0f}, {hi * 100:.0f}] | "
            f"{d['diff'] * 100:+.1f} [{dlo * 100:+.1f}, {dhi * 100:+.1f}] | "
            f"{r['generated_tokens']:.0f} ({r['tokens_vs_baseline']:.2f}x) | "
            f"{r['engine_calls']:.1f} | {r['reward_calls']:.1f} | {r['reward_tokens']:.0f} "
            f"(+{r.get('reward_cached_tokens', 0):.0f}) | "
            f"{r['cached_fraction'] * 100:.0f}% | "
            f"{r['seconds_median']:.1f} / {r['seconds_p95']:.1f} |"
        )
    scored = {k: r["reward"] for k, r in summary["results"].items() if "reward" in r}
    if scored:
        name = summary["config"]["score_with"]
        lines += ["", f"Mean `{name}` reward of the returned answers (scored after timing):", ""]
        lines += [f"- {label}: {value:.3f}" for label, value in scored.items()]
    lines += ["", "Configurations:", ""]
    lines += [f"- `{k}`: `{json.dumps(r['strategy'])}`" for k, r in summary["results"].items()]
    load = ", ".join(f"{x:.1f}" for x in summary["load_average"])
    lines += [
        "",
        f"Wall time {summary['wall_seconds']:.0f} s at concurrency "
        f"{summary['config']['concurrency']}; load average at the end: {load} "
        f"({summary['machine']['cpus']} CPUs).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    p.add_argument("--api-key", default=None)
    p.add_argument("--configs", nargs="+", default=None, help=f"presets: {', '.join(PRESETS)}")
    p.add_argument("--config-file", type=Path, default=None, help="JSON: label -> strategy")
    p.add_argument("--baseline", default="bon4")
    p.add_argument("--tasks", nargs="+", default=["add_sub_1digit", "mul_1digit"])
    p.add_argument("--problems", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="20 problems")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="quality run --fresh's questions and seeds (outside the stored 200-problem run)",
    )
    p.add_argument(
        "--score-with", default=None, help="also score the returned answers with this reward"
    )
    p.add_argument("--out", type=Path, default=None, help="default: results/quality/compare*")
    args = p.parse_args(argv)
    if args.quick:
        args.problems = min(args.problems, 20)
    names = (
        args.configs if args.configs is not None else ([] if args.config_file else DEFAULT_CONFIGS)
    )
    configs = load_configs(names, args.config_file)
    out = args.out or common.results_dir("quality") / ("compare_quick" if args.quick else "compare")
    summary, rows = asyncio.run(run(args, configs))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".raw.json").write_text(json.dumps(rows) + "\n")
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(report(summary))
    print(out.with_suffix(".md").read_text())
    written = [out.with_suffix(s) for s in (".json", ".md", ".raw.json")]
    common.record(written, script=__file__, argv=argv)


if __name__ == "__main__":
    main()

"""DeepConf live, one client, side by side in one run: the race with the default reward against
best_of_n@8 (median latency and accuracy), and the deepconf preset (no reward, budget 32)
against majority@32 (accuracy and generated tokens), through the real HTTP server.

The settings are the ones ``offline.py`` chose on the tune set (read from its summary); the
questions are the fresh evaluation questions (``collect.py``'s order), asked once each per
arm, the arms alternating which goes first, every request with the same seed for both arms.
Intervals: bootstrap over questions (the ratio of medians resamples questions, paired).

    python -m benchmarks deepconf live --base-url http://127.0.0.1:8100/v1 --questions 40
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks import common
from benchmarks.common import bootstrap, md_table, paired_diff
from benchmarks.deepconf.collect import fresh
from winnow.answers.final import equivalent, extract_answer
from winnow.train.tasks import Problem, messages

HERE = common.results_dir("deepconf")


def arms(summary: dict[str, Any], mode: str) -> dict[str, dict[str, Any]]:
    """The two strategies a mode compares, as request objects."""
    off = summary["offline_choice"]
    reading = {"window": off["window"], "statistic": off["statistic"], "eta": off["eta"]}
    if mode == "latency":
        race = summary["race_choice"]
        return {
            "best_of_n@8": {"name": "best_of_n", "n": 8, "reward": "default", "selection": "best"},
            "race@8 + reward": {
                "name": "adaptive", "rule": "confidence", "race": True, "wave": 8, "max_n": 8,
                "min_n": race["min_n"], "confidence": race["tau"], "accept": race["accept"],
                "reward": "default",
                "selection": "best" if race["select"] == "best" else "confidence",
                "token_confidence": {**reading, "eta": race["eta"]},
            },
        }  # fmt: skip
    online = summary["online_choice"]
    return {
        "majority@32": {"name": "best_of_n", "n": 32, "reward": None, "selection": "majority"},
        "deepconf@32": {
            "name": "deepconf", "wave": online["warmup"], "max_n": online["max_n"],
            "confidence": online["tau"], "token_confidence": {**reading, "eta": online["eta"]},
        },
    }  # fmt: skip


async def ask(
    client: httpx.AsyncClient, model: str, problem: Problem, strategy: dict, seed: int
) -> dict[str, Any]:
    body = {"model": model, "messages": messages(problem.question), "max_tokens": 96,
            "temperature": 0.7, "seed": seed, "strategy": strategy}  # fmt: skip
    started = time.perf_counter()
    r = await client.post("/chat/completions", json=body)
    seconds = time.perf_counter() - started
    r.raise_for_status()
    out = r.json()
    answer = extract_answer(out["choices"][0]["message"]["content"])
    return {
        "seconds": seconds,
        "correct": answer is not None and equivalent(answer, problem.answer),
        "generated": out["usage"]["winnow"]["generated_tokens"],
        "details": out["winnow"].get("details"),
    }


def median_ci(values: list[float], rounds: int = 2000) -> tuple[float, float, float]:
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(rounds))
    return statistics.median(values), meds[int(0.025 * rounds)], meds[int(0.975 * rounds) - 1]


def ratio_of_medians(a: list[float], b: list[float], rounds: int = 2000) -> tuple[float, ...]:
    rng = random.Random(1)
    n = len(a)
    ratios = []
    for _ in range(rounds):
        pick = [rng.randrange(n) for _ in range(n)]
        ratios.append(statistics.median(a[i] for i in pick) / statistics.median(b[i] for i in pick))
    ratios.sort()
    ratio = statistics.median(a) / statistics.median(b)
    return ratio, ratios[int(0.025 * rounds)], ratios[int(0.975 * rounds) - 1]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    summary = json.loads(args.choices.read_text())
    compared = arms(summary, args.mode)
    questions = fresh(200)[: args.questions]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in compared}
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    async with httpx.AsyncClient(base_url=args.base_url, headers=headers, timeout=3600) as client:
        model = (await client.get("/models")).json()["data"][0]["id"]
        names = list(compared)
        for i, problem in enumerate(questions):
            order = names if i % 2 == 0 else names[::-1]
            for name in order:
                result = await ask(client, model, problem, compared[name], args.seed + i)
                results[name].append(result)
            last = {
                n: (round(results[n][-1]["seconds"], 2), results[n][-1]["correct"]) for n in names
            }
            print(i, last, flush=True)
    return {"mode": args.mode, "arms": compared, "results": results, "questions": len(questions)}


def report(out: dict[str, Any], command: str) -> str:
    names = list(out["arms"])
    base, other = names[0], names[1]
    r = out["results"]
    lines = [f"# DeepConf live: {other} vs {base}", "", f"Command: `{command}`. "
             f"{out['questions']} fresh questions, one client, arms alternating.", ""]  # fmt: skip
    rows = []
    for name in names:
        seconds = [x["seconds"] for x in r[name]]
        acc = [float(x["correct"]) for x in r[name]]
        med, lo, hi = median_ci(seconds)
        alo, ahi = bootstrap(acc)
        tokens = statistics.fmean(x["generated"] for x in r[name])
        rows.append([name, f"{100 * statistics.fmean(acc):.1f} [{100 * alo:.1f}, {100 * ahi:.1f}]",
                     f"{med:.2f} [{lo:.2f}, {hi:.2f}]", f"{tokens:.0f}"])  # fmt: skip
    lines += md_table(["strategy", "accuracy %", "median latency s", "generated tokens"], rows,
                      "lrrr")  # fmt: skip
    a = [x["seconds"] for x in r[other]]
    b = [x["seconds"] for x in r[base]]
    ratio, lo, hi = ratio_of_medians(a, b)
    diff, dlo, dhi = paired_diff(
        [float(x["correct"]) for x in r[other]], [float(y["correct"]) for y in r[base]]
    )
    tok = sum(x["generated"] for x in r[other]) / sum(x["generated"] for x in r[base])
    lines += ["", f"Median latency ratio {other} / {base}: **{ratio:.2f}** [{lo:.2f}, {hi:.2f}]; "
              f"accuracy difference {100 * diff:+.1f} "
              f"[{100 * dlo:+.1f}, {100 * dhi:+.1f}] points; generated tokens {100 * tok:.1f}% "
              f"of {base}'s.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import asyncio

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8100/v1")
    p.add_argument("--api-key", default=None)
    p.add_argument("--mode", choices=("latency", "online"), default="latency")
    p.add_argument("--questions", type=int, default=40)
    p.add_argument("--seed", type=int, default=500)
    p.add_argument("--choices", type=Path, default=HERE / "offline.json")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    out = asyncio.run(run(args))
    target = args.out or HERE / f"live_{args.mode}"
    command = common.command(__file__, sys.argv[1:] if argv is None else argv)
    text = report(out, command)
    target.with_suffix(".raw.json").write_text(json.dumps(out, default=str))
    common.save(target, {k: v for k, v in out.items() if k != "results"}, text,
                script=__file__, argv=argv, also=[target.with_suffix(".raw.json")])  # fmt: skip


if __name__ == "__main__":
    main()

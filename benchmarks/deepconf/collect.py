"""DeepConf's data: N answers per question, each with its token confidence recorded inside the
engine, its default-reward score and its answer, through the real HTTP server (journaled).

For every question, ONE ``best_of_n`` request (``selection: "confidence"``, the default reward,
``trace: true``, ``return_candidates: true``) goes to a running ``winnow serve``; every
candidate comes back with its answer group, its reward score and its token-confidence curve
(the trace's ``confidence.curve``: the value at each position, recorded by the engine's
confidence processor, no logprobs asked for). ``benchmarks/deepconf/offline.py`` computes every
figure from these rows: the offline confidence vote against majority over random N-subsets, the
online mode (warm-up threshold, cut, consensus stop) replayed on the recorded curves, and the
confidence + reward combinations.

Question sets (named in the rows; nothing is chosen on an evaluation set):

* ``tune`` — 30 + 30 training-split questions of the default reward's two tasks: the only set
  the window, statistic, eta and tau are chosen on.
* ``fresh`` — the quality benchmark's 200 fresh evaluation questions (``--fresh``).
* ``add_sub_3term`` and ``products`` — two reasoning-gym families the default reward never saw
  (three one-digit terms added and subtracted; one-digit products asked in reasoning-gym's
  ``products`` phrasing).

    python -m benchmarks deepconf collect --base-url http://127.0.0.1:8100/v1 --n 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from benchmarks import common
from winnow.train.tasks import Problem, messages, problems

SETS = ("tune", "fresh", "add_sub_3term", "products")
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "add_sub_3term": (
        "basic_arithmetic",
        {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1, "operators": ("+", "-")},
    ),
    "products": ("products", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}),
}
FAMILY_SEED = 20261207
OUT = common.results_dir("deepconf") / "samples"


def family(name: str, count: int) -> list[Problem]:
    """``count`` distinct questions of an unseen family (seeded, so every run asks the same)."""
    import reasoning_gym

    dataset, config = FAMILIES[name]
    seen: dict[str, Problem] = {}
    for item in reasoning_gym.create_dataset(dataset, size=8 * count, seed=FAMILY_SEED, **config):
        question = str(item["question"])
        if question not in seen:
            seen[question] = Problem(name, question, str(item["answer"]))
        if len(seen) == count:
            break
    return list(seen.values())


def fresh(count: int) -> list[Problem]:
    """The quality benchmark's fresh questions (``benchmarks/quality/run.py --fresh``), the two
    tasks taken in turn, so that the first k of them are the same for every ``count``."""
    per_task = []
    for task in ("add_sub_1digit", "mul_1digit"):
        stored = {p.question for p in problems(task, "eval", 100)}
        pool = problems(task, "eval", 100 + count // 2, seed=1)
        per_task.append([p for p in pool if p.question not in stored][: count // 2])
    return [p for pair in zip(*per_task, strict=True) for p in pair]


def question_sets(args: argparse.Namespace) -> list[tuple[str, Problem]]:
    """Every (set, question) of the run, in journal order."""
    items: list[tuple[str, Problem]] = []
    for name in args.sets:
        if name == "tune":
            chosen = [
                p
                for t in ("add_sub_1digit", "mul_1digit")
                for p in problems(t, "train", 30, seed=3)
            ]
        elif name == "fresh":
            chosen = fresh(args.fresh)
        else:
            chosen = family(name, args.family)
        items += [(name, p) for p in chosen]
    return items


def payload(model: str, problem: Problem, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": messages(problem.question)
        if problem.task in ("add_sub_1digit", "mul_1digit")
        else [{"role": "user", "content": problem.question}],
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": seed,
        "strategy": {
            "name": "best_of_n",
            "n": args.n,
            "reward": "default",
            "selection": "confidence",
            "token_confidence": {"window": 16, "top_k": args.top_k},
            "return_candidates": True,
            "trace": True,
        },
    }


def row_of(
    kind: str, i: int, problem: Problem, body: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """What the analysis needs of one response: each candidate's answer, group, reward score,
    length, finish and its token-confidence curve."""
    winnow = body["winnow"]
    trace = winnow["trace"][0] if isinstance(winnow["trace"], list) else winnow["trace"]
    curves = {c["index"]: c["confidence"] for c in trace["candidates"]}
    candidates = []
    for c in sorted(winnow["candidates"], key=lambda c: c["index"]):
        confidence = curves.get(c["index"]) or {}
        candidates.append({
            "index": c["index"],
            "answer": c["answer"],
            "group": c["group"],
            "score": c["score"],
            "tokens": c["tokens"],
            "finish_reason": c["finish_reason"],
            "curve": confidence.get("curve"),
        })  # fmt: skip
    return {
        "set": kind,
        "i": i,
        "question": problem.question,
        "gold": problem.answer,
        "task": problem.task,
        "seconds": round(seconds, 3),
        "usage": body["usage"],
        "chosen": body["choices"][0]["message"]["content"],
        "candidates": candidates,
    }


async def run(args: argparse.Namespace) -> None:
    items = question_sets(args)
    journal = args.out.with_suffix(".rows.jsonl")
    journal.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if journal.exists():
        done = {(r["set"], r["i"]) for r in map(json.loads, journal.read_text().splitlines())}
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = asyncio.Semaphore(args.concurrency)
    counters: dict[str, int] = {}
    todo = []
    for kind, problem in items:
        i = counters.get(kind, 0)
        counters[kind] = i + 1
        if (kind, i) not in done:
            todo.append((kind, i, problem))
    bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="question")
    async with httpx.AsyncClient(base_url=args.base_url, headers=headers, timeout=3600) as client:
        model = (await client.get("/models")).json()["data"][0]["id"]

        async def one(kind: str, i: int, problem: Problem) -> None:
            seed = args.seed + 1000 * SETS.index(kind) + i
            async with limits:
                started = time.perf_counter()
                r = await client.post("/chat/completions", json=payload(model, problem, args, seed))
                seconds = time.perf_counter() - started
            r.raise_for_status()
            with journal.open("a") as f:
                f.write(json.dumps(row_of(kind, i, problem, r.json(), seconds)) + "\n")
            bar.update(1)

        await asyncio.gather(*(one(*item) for item in todo))
    bar.close()
    common.record([journal], script=__file__, argv=sys.argv[1:] if args.argv is None else args.argv)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8100/v1")
    p.add_argument("--api-key", default=None)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", type=int, default=200)
    p.add_argument("--family", type=int, default=30, help="questions per unseen family")
    p.add_argument(
        "--sets", nargs="+", default=list(SETS), choices=SETS, help="in the order they are asked"
    )
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    args.argv = argv
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

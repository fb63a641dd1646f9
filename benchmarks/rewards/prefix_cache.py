"""Reward tokens per strategy call, with and without the reward prefix cache.

The reward calls of three strategies are replayed on the default rewards (SmolLM2-135M
backbone in-process) with real answers of the default model: the candidates the quality
benchmark's journal holds (winnow/train/data/quality.rows.jsonl, N=32 answers per problem).

* best_of_n: one call scoring N answers to one prompt (outcome probe ``default``).
* cards: the first answer grows segment by segment (``--segment`` tokens); per segment one call
  scores it and the same-length slice of a second answer on the accepted prefix.
* tree_search: four answers split into steps at sentence ends; per round one call scores each
  beam's steps so far (process probe ``default_prm``), and with ``partial`` first the half-written
  step (early rejection).

Each workload runs with the cache (512 MiB LRU) and without, alternating which goes first, for
``--rounds`` rounds; the cache is emptied before every problem, so hits come only from within
one strategy call. Printed: reward tokens computed and reused per call, and the median wall time.

    python -m benchmarks rewards prefix_cache --problems 12 --rounds 3

Writes ``benchmarks/results/rewards/reward_prefix_cache{_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks import common
from winnow.models.default_model import build_default_model
from winnow.rewards.backbone import Backbone
from winnow.rewards.base import OutcomeItem, ProcessItem, Reward
from winnow.rewards.probe import ProbeReward
from winnow.rewards.registry import ASSETS
from winnow.settings import default_data_dir
from winnow.train.tasks import problems

JOURNAL = common.QUALITY_ROWS

Workload = Callable[[Reward, Reward], Awaitable[tuple[int, int, int]]]
"""(outcome reward, process reward) -> (calls, tokens computed, tokens reused)."""


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?\n])\s+", text.strip())
    return [p + " " for p in parts if p]


def workloads(
    prompt: str, answers: list[str], n: int, segment: int, tok: Any
) -> dict[str, Workload]:
    async def best_of_n(outcome: Reward, _: Reward) -> tuple[int, int, int]:
        scored = await outcome.score([OutcomeItem(prompt, a) for a in answers[:n]])
        return 1, scored.tokens, scored.cached_tokens

    async def cards(outcome: Reward, _: Reward) -> tuple[int, int, int]:
        kept, other = tok.encode(answers[0]), tok.encode(answers[1])
        calls = tokens = cached = 0
        for end in range(segment, len(kept) + segment, segment):
            accepted = tok.decode(kept[: end - segment])
            window = slice(end - segment, end)
            options = [tok.decode(kept[window]), tok.decode(other[window])]
            scored = await outcome.score([OutcomeItem(prompt, accepted + o) for o in options if o])
            calls, tokens, cached = calls + 1, tokens + scored.tokens, cached + scored.cached_tokens
        return calls, tokens, cached

    def tree(partial: bool) -> Workload:
        async def run(_: Reward, process: Reward) -> tuple[int, int, int]:
            beams = [sentences(a) for a in answers[:4]]
            calls = tokens = cached = 0
            for r in range(1, max(len(b) for b in beams) + 1):
                live = [b for b in beams if len(b) >= r]
                rounds = []
                if partial:
                    halves = [(*b[: r - 1], b[r - 1][: len(b[r - 1]) // 2]) for b in live]
                    rounds.append([ProcessItem(prompt, h, partial=True) for h in halves])
                rounds.append([ProcessItem(prompt, tuple(b[:r])) for b in live])
                for items in rounds:
                    scored = await process.score_steps(items)
                    calls += 1
                    tokens, cached = tokens + scored.tokens, cached + scored.cached_tokens
            return calls, tokens, cached

        return run

    return {
        f"best_of_n N={n}": best_of_n,
        "cards (2 options/segment)": cards,
        "tree_search beam 4": tree(False),
        "tree_search beam 4 + partial": tree(True),
    }


def journal(count: int) -> tuple[dict[int, list[str]], dict[int, str]]:
    if not JOURNAL.exists():
        raise SystemExit(f"{JOURNAL} is missing: run `python -m benchmarks quality run` first")
    rows = [json.loads(line) for line in JOURNAL.read_text().splitlines() if line.strip()]
    rows = sorted(rows, key=lambda r: r["i"])[:count]
    answers = {r["i"]: [c["text"] for c in r["body"]["winnow"]["candidates"]] for r in rows}
    return answers, {r["i"]: r["question"] for r in rows}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    model = str(build_default_model(default_data_dir()))
    on, off = Backbone(model), Backbone(model, prefix_cache_bytes=0)
    on.load()
    off._model, off._tokenizer = on._model, on._tokenizer  # one set of weights
    tok = on.tokenizer

    def render(messages: list[dict[str, str]]) -> str:
        return str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    answers, questions = journal(args.problems)
    tasks = ("add_sub_1digit", "mul_1digit")  # the quality benchmark's problems, in its order
    source = [p for t in tasks for p in problems(t, "eval", 200 // len(tasks))]
    assert all(source[i].question == texts_q for i, texts_q in questions.items())
    rewards = {
        mode: (
            ProbeReward("default", ASSETS / "default", backbone),
            ProbeReward("default_prm", ASSETS / "default_prm", backbone),
        )
        for mode, backbone in (("cache", on), ("no cache", off))
    }
    table: dict[tuple[str, str], dict[str, list[float]]] = {}
    for i, texts in answers.items():
        prompt = render(source[i].messages)
        for name, work in workloads(prompt, texts, args.n, args.segment, tok).items():
            for r in range(args.rounds):
                modes = ["cache", "no cache"] if r % 2 == 0 else ["no cache", "cache"]
                for mode in modes:
                    on.prefix_cache.clear()
                    started = time.perf_counter()
                    calls, tokens, cached = await work(*rewards[mode])
                    row = table.setdefault((name, mode), {"s": [], "calls": [], "t": [], "c": []})
                    row["s"].append(time.perf_counter() - started)
                    if r == 0:
                        row["calls"].append(calls)
                        row["t"].append(tokens)
                        row["c"].append(cached)
        print(f"problem {i} done", file=sys.stderr)
    rows = []
    for (name, mode), row in table.items():
        rows.append(
            {
                "workload": name,
                "mode": mode,
                "calls_per_strategy_call": statistics.mean(row["calls"]),
                "reward_tokens": statistics.mean(row["t"]),
                "reward_cached_tokens": statistics.mean(row["c"]),
                "median_s": statistics.median(row["s"]),
            }
        )
    return {
        "rows": rows,
        "problems": len(answers),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "command": common.command(__file__),
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        "# Reward tokens per strategy call: prefix cache vs full re-encode",
        "",
        f"Command: `{result['command']}` on {result['machine']['cpus']} CPUs "
        f"({result['machine']['platform']}); {result['problems']} problems, real answers of the "
        "default model from the quality journal; default rewards on the SmolLM2-135M backbone.",
        "Tokens are per strategy call (mean over problems); time is the median over problems and "
        "rounds, both modes measured side by side.",
        "",
        "| workload | mode | reward calls | tokens computed | tokens reused | median s |",
        "|---|---|---|---|---|---|",
    ]
    by = {(r["workload"], r["mode"]): r for r in result["rows"]}
    for r in result["rows"]:
        lines.append(
            f"| {r['workload']} | {r['mode']} | {r['calls_per_strategy_call']:.1f} | "
            f"{r['reward_tokens']:.0f} | {r['reward_cached_tokens']:.0f} | {r['median_s']:.2f} |"
        )
    lines.append("")
    for name in dict.fromkeys(r["workload"] for r in result["rows"]):
        on, off = by[(name, "cache")], by[(name, "no cache")]
        lines.append(
            f"- {name}: {off['reward_tokens'] / on['reward_tokens']:.2f}x fewer tokens computed, "
            f"{off['median_s'] / on['median_s']:.2f}x faster (median)"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--problems", type=int, default=12)
    parser.add_argument("--n", type=int, default=8, help="best_of_n candidates")
    parser.add_argument("--segment", type=int, default=12, help="cards segment length, tokens")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 problems, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.problems, args.rounds = 2, 1
    result = asyncio.run(main_async(args))
    stem = "reward_prefix_cache_quick" if args.quick else "reward_prefix_cache"
    out = common.results_dir("rewards") / stem
    common.save(out, result, report(result), script=__file__, argv=argv)


if __name__ == "__main__":
    main()

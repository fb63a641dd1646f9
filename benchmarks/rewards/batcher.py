"""Reward scoring throughput: the cross-request batcher vs one forward pass per call.

C concurrent callers each score one (prompt, response) pair at a time with the default outcome
probe (SmolLM2-135M backbone in-process), for a fixed number of calls. "unbatched" is the same
reward with ``max_jobs=1`` (every call its own forward pass), measured side by side in one run:
each case runs ``--rounds`` times, alternating which mode goes first, and the median round counts.

    python -m benchmarks rewards batcher            # 1, 8, 32 callers
    python -m benchmarks rewards batcher --quick

Writes ``benchmarks/results/rewards/reward_batcher.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from typing import Any

from benchmarks import common
from winnow.models.default_model import build_default_model
from winnow.rewards.backbone import Backbone
from winnow.rewards.base import OutcomeItem
from winnow.rewards.probe import ProbeReward
from winnow.rewards.registry import ASSETS
from winnow.settings import default_data_dir
from winnow.train.tasks import problems


def items(count: int, tokenizer_prompt: Any) -> list[OutcomeItem]:
    out = []
    for p in problems("add_sub_1digit", "eval", count):
        prompt = tokenizer_prompt(p.messages)
        out.append(OutcomeItem(prompt, f"Let me compute it. The answer is {p.answer}."))
    return out


async def run_case(reward: ProbeReward, pairs: list[OutcomeItem], callers: int) -> dict[str, Any]:
    queue = list(pairs)
    latencies: list[float] = []

    async def caller() -> None:
        while queue:
            item = queue.pop()
            started = time.perf_counter()
            await reward.score([item])
            latencies.append(time.perf_counter() - started)

    passes = reward.batcher.passes
    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    wall = time.perf_counter() - started
    return {
        "callers": callers,
        "calls": len(pairs),
        "items_per_s": len(pairs) / wall,
        "median_latency_ms": statistics.median(latencies) * 1000,
        "p99_latency_ms": sorted(latencies)[int(0.99 * (len(latencies) - 1))] * 1000,
        "forward_passes": reward.batcher.passes - passes,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    model = str(build_default_model(default_data_dir()))
    # no prefix cache: every round scores the same pairs, this measures batching alone
    backbone = Backbone(model, prefix_cache_bytes=0)
    backbone.load()
    template = backbone._tokenizer.apply_chat_template

    def render(messages: list[dict[str, str]]) -> str:
        return str(template(messages, tokenize=False, add_generation_prompt=True))

    pairs = items(args.calls, render)
    batched = ProbeReward("default", ASSETS / "default", backbone, max_batch=64, max_wait=0.005)
    single = ProbeReward("default", ASSETS / "default", backbone, max_batch=1, max_wait=0.0)
    await batched.score(pairs[:2])  # warm-up
    rows = []
    for callers in args.callers:
        modes = [("batched", batched), ("unbatched", single)]
        runs: dict[str, list[dict[str, Any]]] = {"batched": [], "unbatched": []}
        for r in range(args.rounds):  # alternate which goes first; keep the median round
            for name, reward in modes if r % 2 == 0 else modes[::-1]:
                runs[name].append(await run_case(reward, pairs, callers))
        for name, found in runs.items():
            found.sort(key=lambda row: row["items_per_s"])
            row = {**found[len(found) // 2], "mode": name, "rounds": len(found)}
            rows.append(row)
            print(json.dumps(row))
    return {
        "rows": rows,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "command": common.command(__file__),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--calls", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case; median kept")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.rounds = 32, 1
    result = asyncio.run(main_async(args))
    lines = [
        "# Reward scoring throughput: cross-request batching vs one pass per call",
        "",
        f"Command: `{result['command']}` on {result['machine']['cpus']} CPUs "
        f"({result['machine']['platform']}). Default outcome probe, SmolLM2-135M backbone.",
        "",
        *common.md_table(
            ("callers", "mode", "items/s", "median ms", "p99 ms", "forward passes"),
            (
                (r["callers"], r["mode"], f"{r['items_per_s']:.1f}",
                 f"{r['median_latency_ms']:.0f}", f"{r['p99_latency_ms']:.0f}", r["forward_passes"])
                for r in result["rows"]
            ),
        ),
    ]  # fmt: skip
    by = {(r["callers"], r["mode"]): r for r in result["rows"]}
    lines.append("")
    for c in args.callers:
        ratio = by[(c, "batched")]["items_per_s"] / by[(c, "unbatched")]["items_per_s"]
        lines.append(f"- {c} callers: batched / unbatched throughput = {ratio:.2f}x")
    out = common.results_dir("rewards") / "reward_batcher"
    common.save(out, result, "\n".join(lines) + "\n", script=__file__, argv=argv)


if __name__ == "__main__":
    main()

"""``winnow bench serve``: the command line over the load generator (:mod:`.loadgen`) and its
report (:mod:`.report`): run, print the table(s), write the result file and the sweep plot."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from winnow.clients import report
from winnow.clients.loadgen import BenchConfig, run_sweep
from winnow.clients.prompts import BenchPrompt, load_prompts_file, reasoning_gym_prompts, take
from winnow.clients.stats import parse_goodput

# options that carry a BenchConfig field of the same name, unchanged
_SAME_NAMES = (
    "base_url", "endpoint", "model", "api_key", "request_rate", "burstiness", "max_concurrency",
    "num_warmups", "max_tokens", "temperature", "ignore_eos", "extra_body", "seed", "timeout",
    "client", "naive_n", "reward", "reward_base_url", "reward_api_key", "naive_sequential",
)  # fmt: skip


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        **{name: getattr(args, name) for name in _SAME_NAMES},
        stream=args.client == "openai" if args.stream is None else args.stream,
        goodput=parse_goodput(args.goodput) if args.goodput else None,
        progress=not args.disable_tqdm,
    )


def prompts_from_args(args: argparse.Namespace) -> list[BenchPrompt]:
    if args.prompts_file is not None:
        return take(load_prompts_file(args.prompts_file), args.num_prompts)
    return reasoning_gym_prompts(args.task, args.num_prompts, args.seed)


def main(args: argparse.Namespace) -> int:
    """``winnow bench serve``: run, print the table(s), write the result file (and the plot)."""
    try:
        cfg = config_from_args(args)
        prompts = prompts_from_args(args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"winnow bench serve: error: {exc}", file=sys.stderr)
        return 2
    rates = args.rate_sweep or [cfg.request_rate]
    runs = asyncio.run(run_sweep(cfg, prompts, rates))
    for run in runs:
        print(report.format_table(run))
    if args.result_file is not None:
        report.write_json(runs if args.rate_sweep else runs[0], args.result_file)
        print(f"results: {args.result_file}")
    if args.rate_sweep:
        plot = args.plot_file or (args.result_file or Path("bench_sweep.json")).with_suffix(".png")
        report.plot_sweep(runs, plot)
        print(f"plot: {plot}")
    return 0 if any(run.metrics.completed for run in runs) else 1

"""Decoding speed of VAS vs plain sampling, side by side on one winnow server.

Starts ``winnow serve`` (the embedded default model) on a free port, then for ``--rounds``
rounds sends the same batch of requests (``--concurrency`` at once, ``--max-tokens`` each,
``ignore_eos`` so every request writes exactly that many tokens) as plain sampling, as VAS with
one value model and as VAS composing two, in an order that rotates every round. Reports the
median tokens/s of each and VAS's overhead.

    python -m benchmarks values vas_speed               # 3 rounds, 4 concurrent, 64 tokens
    python -m benchmarks values vas_speed --rounds 5 --concurrency 8
    python -m benchmarks values vas_speed --processor   # the processor's own cost per step

``--processor`` times the in-engine VAS step alone (hidden-state recovery, top-k, Q of the
shipped value models) on batches of logits rows, in this process, against the full-vocabulary
LM-head matmul the model does for those rows anyway: machine noise hurts it far less than the
end-to-end rounds on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks import common
from winnow.clients.launch import free_port, server_process

CASES: dict[str, dict[str, Any] | None] = {
    "sample": None,
    "vas default": {"name": "vas", "values": {"default": 3.0}},
    "vas default+brevity": {"name": "vas", "values": {"default": 3.0, "brevity": 1.0}},
}
PROMPT = "Calculate 7 * 8. Give the final answer as a single number."


async def one_case(
    client: httpx.AsyncClient, strategy: dict | None, concurrency: int, max_tokens: int, seed: int
) -> dict[str, float]:
    async def one(i: int) -> int:
        body: dict[str, Any] = {
            "prompt": PROMPT,
            "max_tokens": max_tokens,
            "temperature": 1.0,
            "ignore_eos": True,
            "seed": seed + i,
        }
        if strategy is not None:
            body["strategy"] = strategy
        r = await client.post("/v1/completions", json=body)
        r.raise_for_status()
        return int(r.json()["usage"]["completion_tokens"])

    start = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(i) for i in range(concurrency))))
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


async def measure(url: str, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in CASES}
    names = list(CASES)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await one_case(client, CASES["vas default"], 1, 8, 0)  # warm-up (loads the heads)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                result = await one_case(
                    client, CASES[name], args.concurrency, args.max_tokens, 100 * r
                )
                runs[name].append(result)
                print(f"round {r} {name:22s} {result['tokens_per_s']:7.1f} tok/s", flush=True)
    return runs


def processor_cost(out: Path, repeats: int = 20) -> dict[str, Any]:
    """Median ms per decoding step of the VAS adjustment vs the LM head, by batch size."""
    import torch

    from winnow.engine.processors.vas import VasRule, guide_rows
    from winnow.heads.value import EmbeddingInverse, available, load_value_model, output_embedding
    from winnow.models.default_model import build_default_model
    from winnow.settings import default_data_dir

    model = build_default_model(default_data_dir())
    embedding = output_embedding(model)
    inverse = EmbeddingInverse(embedding)
    heads = {str(p): load_value_model(p)[0] for p in available().values()}
    names = list(heads)
    result: dict[str, Any] = {"threads": torch.get_num_threads(), "by_batch": {}}
    for batch in (1, 4, 16, 64):
        hidden = torch.randn(batch, embedding.shape[1]) * 2
        logits = hidden @ embedding.T
        one = {i: VasRule({names[0]: 3.0}, 20) for i in range(batch)}
        two = {i: VasRule(dict.fromkeys(names, 1.0), 20) for i in range(batch)}
        cases = {
            "lm_head": lambda h=hidden: h @ embedding.T,
            "vas 1 model": lambda x=logits, r=one: guide_rows(x.clone(), r, inverse, heads),
            "vas 2 models": lambda x=logits, r=two: guide_rows(x.clone(), r, inverse, heads),
            "clone only": lambda x=logits: x.clone(),
        }
        row = {}
        for name, fn in cases.items():
            fn()
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1000)
            row[name] = statistics.median(times)
        row["vas 1 model"] -= row["clone only"]
        row["vas 2 models"] -= row["clone only"]
        result["by_batch"][batch] = row
        print(f"batch {batch:3d}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in row.items()))
    out.with_suffix(".processor.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=common.results_dir("values") / "vas_speed")
    parser.add_argument("--processor", action="store_true", help="time the processor alone")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.processor:
        processor_cost(args.out)
        common.record([args.out.with_suffix(".processor.json")], script=__file__, argv=argv,
                      entry=f"{args.out.name}_processor")  # fmt: skip
        return 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.gettempdir()) / f"winnow_vas_speed_server_{os.getpid()}.log"
    print(f"server log: {log}")
    with server_process(common.winnow_serve(port), url, log):
        runs = asyncio.run(measure(url, args))
    medians = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in runs.items()}
    base = medians["sample"]
    report = {
        "what": "tokens/s of plain sampling vs VAS on one winnow server (median of rounds)",
        "command": common.command(__file__, argv),
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "median_tokens_per_s": medians,
        "overhead_vs_sample": {k: 1 - v / base for k, v in medians.items()},
        "runs": runs,
    }
    lines = [
        "# VAS decoding speed vs plain sampling",
        "",
        f"`{report['command']}`: {args.concurrency} concurrent requests x {args.max_tokens} "
        f"tokens (ignore_eos), median of {args.rounds} rounds, order rotated per round, "
        f"{os.cpu_count()} CPUs.",
        "",
        *common.md_table(
            ("case", "tokens/s", "overhead vs sample"),
            (
                (k, f"{v:.1f}", f"{report['overhead_vs_sample'][k] * 100:+.1f}%")
                for k, v in medians.items()
            ),
        ),
    ]
    common.save(args.out, report, "\n".join(lines) + "\n", script=__file__, argv=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A steady best_of_n load on a running server, for profiling it (py-spy, perf) while it runs.

Four clients (``--clients``) send chat best_of_n requests (N=8, 64 tokens, T 0.7, the serving
comparison's prompts) back to back for ``--seconds``, with or without ``ignore_eos``, and print
the request count, median latency and how the reward was computed (candidates scored from the
engine's tap, reward tokens re-encoded):

    python -m benchmarks serving bon_load --ignore-eos --seconds 75 &
    py-spy record -p <winnow serve pid> -d 55 -r 50 -f raw -o profile.txt --nonblocking

py-spy is not a dependency of winnow (``pip install --target /tmp/pyspy py-spy``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx

from winnow.clients.prompts import winnow_task_prompts


async def load(args: argparse.Namespace) -> dict:
    prompts = winnow_task_prompts("add_sub_1digit", 16, seed=0)
    async with httpx.AsyncClient(base_url=args.base_url, timeout=900) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        done: list[tuple[float, int, int]] = []
        until = time.monotonic() + args.seconds

        async def worker(k: int) -> None:
            i = k
            while time.monotonic() < until:
                started = time.monotonic()
                r = await client.post("/v1/chat/completions", json={
                    "model": model, "messages": prompts[i % len(prompts)].chat_messages(),
                    "max_tokens": 64, "temperature": 0.7, "ignore_eos": args.ignore_eos,
                    "seed": i, "strategy": {"name": "best_of_n", "n": 8},
                })  # fmt: skip
                r.raise_for_status()
                usage = r.json()["usage"]["winnow"]
                done.append((time.monotonic() - started, usage["reward_tapped"],
                             usage["reward_tokens"]))  # fmt: skip
                i += args.clients

        await asyncio.gather(*(worker(k) for k in range(args.clients)))
    return {
        "requests": len(done),
        "median_s": statistics.median(d[0] for d in done) if done else None,
        "candidates_tapped": sum(d[1] for d in done),
        "candidates": 8 * len(done),
        "reward_tokens_per_request": statistics.fmean(d[2] for d in done) if done else None,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8100")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=75.0)
    p.add_argument("--ignore-eos", action="store_true")
    print(json.dumps(asyncio.run(load(p.parse_args(argv)))))


if __name__ == "__main__":
    main()

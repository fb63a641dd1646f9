"""winnow's ``sample`` strategy against a plain vLLM OpenAI server: same model, machine, load.

Each server runs as a subprocess on 127.0.0.1, one after the other (never both: the engines
would share the cores), and gets the same fixed prompt set (reasoning-gym basic_arithmetic,
seed 0) through winnow's load generator at 1, 4 and 16 concurrent clients. Requests are
greedy with ``ignore_eos``, so both servers generate exactly ``--max-tokens`` tokens per request
and the work is identical. The headline is winnow's overhead: median and p99 E2EL and request
throughput relative to vLLM (target: under 10%). The CPU time of each server's process group
per request is recorded too (spinning OpenMP threads make it follow wall time, though).

On a shared machine the wall-clock figures move with other people's work: ``--rounds R`` runs
each server R times, alternating which goes first, and keeps each level's least disturbed
round; the report gives the other vLLM engines and the load average seen during each level.

    python benchmarks/serving/compare_sample.py [--quick] [--rounds 2]

Writes ``benchmarks/results/serving_sample_vs_vllm.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from winnow.clients.launch import free_port, server_process
from winnow.clients.loadgen import BenchConfig, BenchRun, run_benchmark
from winnow.clients.prompts import BenchPrompt, reasoning_gym_prompts
from winnow.clients.report import to_json

RESULTS = Path(__file__).resolve().parents[1] / "results"
NAME = "serving_sample_vs_vllm"
TARGET_OVERHEAD = 0.10
WALL_FIGURES = ("median_e2el", "p99_e2el", "request_throughput")  # what the target is about
VLLM_ENV = {
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "HF_HUB_OFFLINE": "1",
}


@dataclass(frozen=True)
class Server:
    name: str
    command: list[str]
    env: dict[str, str]


def servers(model_dir: Path, port: int) -> list[Server]:
    py = sys.executable
    winnow = [py, "-m", "winnow.cli", "serve", "--port", str(port), "--max-model-len", "2048"]
    vllm = [
        py, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    return [Server("winnow", winnow, {}), Server("vllm", vllm, dict(VLLM_ENV))]


# ---- the machine -----------------------------------------------------------------------------


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine() -> dict[str, Any]:
    mem_kb = _proc_field("/proc/meminfo", "MemTotal")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor(),
        "memory_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def other_engines(own_pgid: int | None = None) -> int:
    """vLLM engine processes on the machine that are not ours (figures are noisy beside them)."""
    out = subprocess.run(["ps", "-eo", "pgid=,args="], capture_output=True, text=True).stdout
    count = 0
    for line in out.splitlines():
        pgid, _, args = line.strip().partition(" ")
        if "EngineCore" in args and pgid != str(own_pgid):
            count += 1
    return count


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of the live processes of a process group (the server and its
    engine). Less sensitive to other load than wall time, though spinning threads inflate it."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields from the state on: pgrp, utime, stime at 2, 11, 12
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# ---- one server ------------------------------------------------------------------------------


@contextmanager
def running(server: Server, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The server up and healthy on 127.0.0.1:port; always stopped (its whole process group)."""
    with server_process(server.command, f"http://127.0.0.1:{port}", log, env=server.env) as proc:
        yield proc


def measure(
    server: Server, port: int, cfg: BenchConfig, prompts: list[BenchPrompt], levels: list[int]
) -> dict[str, Any]:
    """Start the server, run every concurrency level (each after its warm-ups), stop it."""
    log = Path(tempfile.mkdtemp(prefix=f"compare-{server.name}-")) / "server.log"
    started = time.monotonic()
    record: dict[str, Any] = {"command": shlex.join(server.command), "env": server.env}
    with running(server, port, log) as proc:
        record["startup_s"] = round(time.monotonic() - started, 1)
        print(f"[{server.name}] up in {record['startup_s']} s (log: {log})", flush=True)
        runs: dict[str, Any] = {}
        for clients in levels:
            before, cpu = other_engines(proc.pid), group_cpu_seconds(proc.pid)
            run = asyncio.run(run_benchmark(replace(cfg, max_concurrency=clients), prompts))
            summary = _summary(run, max(before, other_engines(proc.pid)))
            requests = len(run.results) + cfg.num_warmups
            summary["server_cpu_ms_per_request"] = (
                (group_cpu_seconds(proc.pid) - cpu) * 1000 / requests
            )
            runs[str(clients)] = summary
            print(f"[{server.name}] {clients:>2} clients: {_line(runs[str(clients)])}", flush=True)
        record["runs"] = runs
    return record


def _summary(run: BenchRun, other_engines_seen: int) -> dict[str, Any]:
    full = to_json(run)
    full.pop("requests")
    full["errors"] = sorted({r.error for r in run.results if not r.success})[:5]
    full["other_engines_seen"] = other_engines_seen
    full["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    return full


def _line(s: dict[str, Any]) -> str:
    return (
        f"median E2EL {s['median_e2el_ms']:.0f} ms, p99 {s['p99_e2el_ms']:.0f} ms, "
        f"{s['request_throughput']:.2f} req/s, {s['output_throughput']:.1f} tok/s, "
        f"server CPU {s['server_cpu_ms_per_request']:.0f} ms/req, failed {s['failed']}, "
        f"other engines {s['other_engines_seen']}"
    )


# ---- the comparison --------------------------------------------------------------------------


def compare(
    pair: list[Server], port: int, cfg: BenchConfig, prompts: list[BenchPrompt], levels: list[int],
    rounds: int,
) -> dict[str, Any]:  # fmt: skip
    """Each server once per round, one at a time, alternating which goes first (AB BA AB ...)."""
    records: dict[str, list[dict[str, Any]]] = {s.name: [] for s in pair}
    for r in range(rounds):
        for server in pair if r % 2 == 0 else pair[::-1]:
            records[server.name].append(measure(server, port, cfg, prompts, levels))
    return {name: best_round(recs, levels) for name, recs in records.items()}


def best_round(records: list[dict[str, Any]], levels: list[int]) -> dict[str, Any]:
    """Per level, the round with the lowest median E2EL: the one least disturbed by other load."""
    runs = {
        c: min((r["runs"][c] for r in records), key=lambda run: run["median_e2el_ms"])
        for c in map(str, levels)
    }
    best = {**records[0], "startup_s": [r["startup_s"] for r in records], "runs": runs}
    if len(records) > 1:
        best["rounds"] = [r["runs"] for r in records]
    return best


def overheads(results: dict[str, Any], levels: list[int]) -> dict[str, dict[str, float]]:
    """winnow relative to vLLM per level: latency ratios - 1, throughput 1 - ratio (>0: worse)."""
    out = {}
    for clients in map(str, levels):
        w, v = results["winnow"]["runs"][clients], results["vllm"]["runs"][clients]
        out[clients] = {
            "median_e2el": w["median_e2el_ms"] / v["median_e2el_ms"] - 1,
            "p99_e2el": w["p99_e2el_ms"] / v["p99_e2el_ms"] - 1,
            "request_throughput": 1 - w["request_throughput"] / v["request_throughput"],
            "server_cpu": w["server_cpu_ms_per_request"] / v["server_cpu_ms_per_request"] - 1,
        }
    return out


def _load(data: dict[str, Any]) -> tuple[float, bool]:
    """The highest load average seen, and whether other work disturbed the figures."""
    runs = [r for srv in data["servers"].values() for r in srv["runs"].values()]
    load = max(r["loadavg_1m_after"] for r in runs)
    # our own server alone brings the load to about the core count
    return load, bool(data["other_engines_seen"]) or load > data["machine"]["nproc"] + 1


def _header(data: dict[str, Any]) -> list[str]:
    m, cfg = data["machine"], data["config"]
    seen = data["other_engines_seen"]
    rounds = cfg["rounds"]
    load, noisy = _load(data)
    return [
        "# winnow `sample` vs plain vLLM (OpenAI server), same model and machine",
        "",
        f"- date: {data['date']}{' (quick run)' if data['quick'] else ''}",
        f"- machine: {m['nproc']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, {m['platform']}",
        f"- model: {cfg['model_dir']}",
        f"- load: {cfg['num_prompts']} prompts (reasoning-gym {cfg['task']}, seed {cfg['seed']}), "
        f"{cfg['endpoint']} endpoint, streamed, max_tokens {cfg['max_tokens']} with ignore_eos, "
        f"temperature {cfg['temperature']}, all sent at once under a cap of N clients",
        f"- servers one at a time; {rounds} round(s) each"
        + (", alternating order, best round per level kept" if rounds > 1 else ""),
        f"- other vLLM engines on the machine during the runs: up to {seen}; 1-minute load "
        f"average after a level: up to {load:.1f} on {m['nproc']} cores "
        + ("(**other load: wall-clock figures are noisy**)" if noisy else "(quiet machine)"),
        f"- command: `{data['command']}`",
        "",
    ]


def _results_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| clients | server | median E2EL (ms) | p99 E2EL (ms) | median TTFT (ms) | req/s "
        "| output tok/s | server CPU (ms/req) | failed | other engines | load avg after |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for clients in map(str, data["config"]["concurrency"]):
        for name in ("vllm", "winnow"):
            s = data["servers"][name]["runs"][clients]
            lines.append(
                f"| {clients} | {name} | {s['median_e2el_ms']:.0f} | {s['p99_e2el_ms']:.0f} | "
                f"{s['median_ttft_ms']:.0f} | {s['request_throughput']:.2f} | "
                f"{s['output_throughput']:.1f} | {s['server_cpu_ms_per_request']:.0f} | "
                f"{s['failed']} | {s['other_engines_seen']} | {s['loadavg_1m_after']:.1f} |"
            )
    return lines


def _overhead_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"winnow relative to vLLM (positive = winnow worse; target < {TARGET_OVERHEAD:.0%}):",
        "",
        "| clients | median E2EL | p99 E2EL | request throughput | server CPU per request |",
        "|---:|---:|---:|---:|---:|",
    ]
    for clients, o in data["overhead"].items():
        lines.append(
            f"| {clients} | {o['median_e2el']:+.1%} | {o['p99_e2el']:+.1%} | "
            f"{o['request_throughput']:+.1%} | {o['server_cpu']:+.1%} |"
        )
    verdict = "met" if data["target_met"] else "NOT met"
    if _load(data)[1]:
        verdict += " (not conclusive: other load on the machine)"
    lines += ["", f"Target (< {TARGET_OVERHEAD:.0%} on E2EL and throughput): **{verdict}**."]
    return lines


def markdown(data: dict[str, Any]) -> str:
    servers_used = [f"- {name}: `{s['command']}`" for name, s in data["servers"].items()]
    lines = [*_header(data), *_results_table(data), *_overhead_table(data), "", *servers_used]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="16 prompts, 16 tokens: a check run")
    p.add_argument("--num-prompts", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts")
    p.add_argument("--endpoint", choices=["completions", "chat"], default="chat")
    p.add_argument("--port", type=int, default=0, help="default: a free port")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rounds", type=int, default=1, help="runs per server, alternating; best round kept"
    )
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.port = args.port or free_port()
    if args.quick:
        args.num_prompts, args.max_tokens = 16, 16
    return args


def main(argv: list[str] | None = None) -> int:
    from winnow.models.default_model import build_default_model
    from winnow.settings import default_data_dir

    args = parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    model_dir = build_default_model(default_data_dir())
    prompts = reasoning_gym_prompts("basic_arithmetic", args.num_prompts, args.seed)
    cfg = BenchConfig(
        base_url=f"http://127.0.0.1:{args.port}/v1", endpoint=args.endpoint,
        max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True, num_warmups=2,
        seed=args.seed, timeout=600.0, progress=False,
    )  # fmt: skip
    pair = servers(model_dir, args.port)
    results = compare(pair, args.port, cfg, prompts, levels, args.rounds)
    over = overheads(results, levels)
    seen = max(r["other_engines_seen"] for s in results.values() for r in s["runs"].values())
    data = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": machine(),
        "config": {
            "model_dir": str(model_dir),
            "task": "basic_arithmetic",
            "seed": args.seed,
            "num_prompts": args.num_prompts,
            "max_tokens": args.max_tokens,
            "temperature": 0.0,
            "ignore_eos": True,
            "endpoint": args.endpoint,
            "stream": True,
            "concurrency": levels,
            "rounds": args.rounds,
        },
        "other_engines_seen": seen,
        "servers": results,
        "overhead": over,
        "target_met": all(o[k] < TARGET_OVERHEAD for o in over.values() for k in WALL_FIGURES),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{NAME}.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out_dir / f"{NAME}.md").write_text(markdown(data))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())

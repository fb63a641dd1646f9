"""winnow against a plain vLLM OpenAI server and against a naive client-side pipeline: one run.

Three comparisons, side by side, on the same model, machine, prompts and load:

1. ``sample``: winnow's ``sample`` strategy vs plain vLLM at 1, 4 and 16 concurrent clients
   (streamed chat): median and p99 E2EL and throughput. Target: winnow's overhead under 10%.
2. ``best_of_n`` N=8 (reward ``default``) vs raw vLLM ``n=8`` sampling of the same prompts (no
   scoring): the cost of scoring and selection. Target: median E2EL within 1.10x (the reward
   tap scores inside the engine; 1.25x before it).
3. ``best_of_n`` vs the naive client-side pipeline peers run (8 separate completion requests to
   the plain vLLM server, then one ``POST /v1/rewards`` per candidate to winnow's scoring
   endpoint; :mod:`winnow.clients.naive`) at the same concurrency. Target: at least 1.3x its
   request throughput. Comparisons 2 and 3 share winnow's ``best_of_n`` measurements.

Both servers run as subprocesses on 127.0.0.1 and stay up for the whole run (the naive pipeline
needs vLLM for generation and winnow for scoring), but only one side is measured at a time: each
round measures every side of a comparison in turn, rotating which goes first, so slow drifts on
a shared machine fall on every side alike. The report gives medians over rounds and the median
of the per-round ratios (paired within a round). vLLM gets winnow's own CPU engine settings
(:func:`winnow.engine.vllm_local.default_engine_args`: fp32, eager, prefix caching, chunked
prefill off, engine seed 0), the same KV cache size and the same environment, so the difference
is winnow. Every request asks for ``max_tokens`` with ``ignore_eos`` at temperature 0.7: every side
generates exactly the same number of tokens per candidate. Prompts: the evaluation split of
:mod:`winnow.train.tasks`' ``add_sub_1digit`` (seed 0), with the answer instruction.

    python -m benchmarks serving compare --quick     # a few minutes: checks the pipeline
    python -m benchmarks serving compare             # the full run (its estimate is printed)

Writes ``benchmarks/results/serving/serving_compare{_natural}{_notap}{_quick}.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import common
from winnow.clients.launch import free_port, server_process
from winnow.clients.loadgen import BenchConfig, BenchRun, run_benchmark
from winnow.clients.prompts import BenchPrompt, winnow_task_prompts
from winnow.clients.report import to_json

TASK = "add_sub_1digit"
TEMPERATURE = 0.7
N = 8
MAX_MODEL_LEN = 2048
TARGET_OVERHEAD = 0.10  # comparison 1: winnow slower by less than this
TARGET_BON_E2EL = 1.10  # comparison 2: best_of_n median E2EL / raw n=8 median E2EL at most
REQUEST_SEED = 1234  # --natural-stop: every request's seed (its candidates get seed + i)
TARGET_NAIVE_SPEEDUP = 1.3  # comparison 3: best_of_n req/s / naive pipeline req/s at least


@dataclass(frozen=True)
class Plan:
    """The size of a run: ``{clients: prompts}`` per comparison, tokens, rounds."""

    max_tokens: int
    sample_levels: dict[int, int]
    bon_levels: dict[int, int]
    rounds: int

    @property
    def num_prompts(self) -> int:
        return max([*self.sample_levels.values(), *self.bon_levels.values()])


FULL = Plan(max_tokens=64, sample_levels={1: 8, 4: 16, 16: 32}, bon_levels={1: 4, 4: 8}, rounds=3)
QUICK = Plan(max_tokens=16, sample_levels={1: 2, 4: 4, 16: 16}, bon_levels={1: 2, 4: 4}, rounds=2)


# ---- the duration estimate -------------------------------------------------------------------

# Decode throughput of the engine (tokens/s) by sequences in the batch, measured on 2 cores with
# this model (reference/environment.md: n=1 15-19, n=8 80-95, n=32 ~156), flat beyond.
DECODE_RATE = ((1, 17.0), (8, 85.0), (32, 156.0), (128, 180.0))
STARTUP_S = 75.0  # one server, quiet machine (engine ~26 s, rewards and warm-up the rest)
REQUEST_S = 0.25  # per-wave fixed costs: prefill, HTTP, scheduling
SCORING_S = 0.6  # one best-of-8 reward pass (8 x ~110 tokens through the probe's backbone)


def decode_rate(seqs: int) -> float:
    """Tokens/s at ``seqs`` sequences, interpolated on log(seqs)."""
    pts = DECODE_RATE
    if seqs <= pts[0][0]:
        return pts[0][1]
    for (s0, r0), (s1, r1) in itertools.pairwise(pts):
        if seqs <= s1:
            w = (math.log(seqs) - math.log(s0)) / (math.log(s1) - math.log(s0))
            return r0 + w * (r1 - r0)
    return pts[-1][1]


def cell_seconds(clients: int, prompts: int, max_tokens: int, n: int, scored: bool) -> float:
    waves = math.ceil(prompts / clients)
    seqs = min(clients, prompts) * n
    wave = seqs * max_tokens / decode_rate(seqs) + REQUEST_S + (SCORING_S if scored else 0.0)
    return waves * wave


def round_seconds(plan: Plan) -> float:
    sample = sum(
        2 * cell_seconds(c, p, plan.max_tokens, 1, False) for c, p in plan.sample_levels.items()
    )
    bon = sum(
        cell_seconds(c, p, plan.max_tokens, N, True) * 2  # winnow best_of_n, naive
        + cell_seconds(c, p, plan.max_tokens, N, False)  # raw n=8
        for c, p in plan.bon_levels.items()
    )
    return sample + bon


def sequential_naive_seconds(plan: Plan) -> float:
    """The for-loop client: each candidate alone, one after the other, then N reward calls."""
    return sum(
        math.ceil(p / c) * N * cell_seconds(c, c, plan.max_tokens, 1, True)
        for c, p in plan.bon_levels.items()
    )


def estimate_seconds(plan: Plan, sequential_naive: bool = False) -> float:
    per_round = round_seconds(plan) + (sequential_naive_seconds(plan) if sequential_naive else 0)
    warmup = cell_seconds(16, plan.num_prompts, 2, 1, False) * 2 + per_round / 4
    return 2 * STARTUP_S + warmup + plan.rounds * per_round


# ---- the machine -----------------------------------------------------------------------------


def other_engines(own_pgids: Sequence[int]) -> int:
    """vLLM engine processes on the machine that are not ours (figures are noisy beside them)."""
    out = subprocess.run(["ps", "-eo", "pgid=,args="], capture_output=True, text=True).stdout
    own = {str(p) for p in own_pgids}
    count = 0
    for line in out.splitlines():
        pgid, _, args = line.strip().partition(" ")
        if "EngineCore" in args and pgid not in own:
            count += 1
    return count


def group_cpu_seconds(pgids: Sequence[int]) -> dict[int, float]:
    """User + system CPU seconds of the live processes of each process group."""
    totals = dict.fromkeys(pgids, 0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        pgid = int(fields[2])  # fields from the state on: pgrp, utime, stime at 2, 11, 12
        if pgid in totals:
            totals[pgid] += int(fields[11]) + int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return {pgid: jiffies / tick for pgid, jiffies in totals.items()}


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


# ---- the servers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def vllm_flags(engine_args: Mapping[str, Any]) -> list[str]:
    """winnow's engine arguments as ``vllm.entrypoints.openai.api_server`` options (its logits
    processors are winnow's own and stay out: they are part of what is measured)."""
    from winnow.engine.remote.worker import engine_flags

    return engine_flags(
        {k: v for k, v in engine_args.items() if k not in ("model", "logits_processors")}
    )


def servers(
    model_dir: Path, kv_cache_gib: int, data_dir: Path, winnow_flags: Sequence[str] = ()
) -> tuple[Server, Server, dict]:
    from winnow.engine.vllm_local import default_engine_args

    py = sys.executable
    engine_args = default_engine_args(str(model_dir), True, {"max_model_len": MAX_MODEL_LEN})
    cache = data_dir / "cache"
    env = {
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
    }
    wport, vport = free_port(), free_port()
    winnow = Server(
        "winnow",
        common.winnow_serve(
            wport, "--kv-cache-gib", str(kv_cache_gib), "--max-model-len", str(MAX_MODEL_LEN),
            "--log-level", "warning",
            # timeouts are not what is measured: a loaded machine must not turn waits into errors
            "--request-timeout", "1800", "--reward-timeout", "900", *winnow_flags),
        env, wport,
    )  # fmt: skip
    vllm = Server(
        "vllm",
        [py, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
         "--served-model-name", model_dir.name, "--host", "127.0.0.1", "--port", str(vport),
         "--uvicorn-log-level", "warning", "--disable-uvicorn-access-log",
         *vllm_flags(engine_args)],
        env, vport,
    )  # fmt: skip
    return winnow, vllm, engine_args


def wait_for_memory(need_gib: float, patience_s: float = 600.0) -> None:
    """Wait until ``need_gib`` is available: on a shared machine an engine started without room
    would get someone's process (or ours) killed by the OOM killer."""
    deadline = time.monotonic() + patience_s
    while (avail := common.mem_available_gib()) < need_gib:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {avail:.1f} GiB available, an engine needs ~{need_gib} GiB")
        print(f"waiting for memory: {avail:.1f} of {need_gib} GiB available", flush=True)
        time.sleep(15)


@contextmanager
def both_running(
    pair: Sequence[Server], logs: Path, need_gib: float, patience_s: float
) -> Iterator[dict[str, Any]]:
    """Start the servers one after the other (never two engines loading at once); stop both."""
    started: dict[str, Any] = {}
    with ExitStack() as stack:
        for i, server in enumerate(pair):
            wait_for_memory(need_gib * (len(pair) - i), patience_s)  # room for all still to come
            t = time.monotonic()
            log = logs / f"{server.name}.log"
            proc = stack.enter_context(server_process(server.command, _root(server), log,
                                                      env=server.env))  # fmt: skip
            started[server.name] = {"pgid": proc.pid, "startup_s": round(time.monotonic() - t, 1)}
            print(f"[{server.name}] up in {started[server.name]['startup_s']} s (log {log})",
                  flush=True)  # fmt: skip
        yield started


def _root(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}"


# ---- the sides of each comparison ------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    name: str
    cfg: BenchConfig


@dataclass
class Group:
    """One comparison at one concurrency: its sides, measured one after the other each round."""

    comparison: str  # "sample" or "best_of_n"
    clients: int
    prompts: int
    sides: list[Side]
    rounds: list[dict[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.comparison}@{self.clients}"


def build_groups(
    plan: Plan,
    winnow: Server,
    vllm: Server,
    reward: str,
    sequential_naive: bool = False,
    natural_stop: bool = False,
) -> list[Group]:
    """Every side of every comparison. With ``natural_stop`` candidates end at EOS (no
    ``ignore_eos``) and every request carries the seed :data:`REQUEST_SEED`, which vLLM's n=8
    children, winnow's candidates and the naive client's 8 requests all turn into seed + i: the
    sides sample the same candidates, so they generate the same tokens."""
    base = BenchConfig(
        endpoint="chat", max_tokens=plan.max_tokens, temperature=TEMPERATURE,
        ignore_eos=not natural_stop, seed=0, timeout=900.0, progress=False,
    )  # fmt: skip
    seeded = {"seed": REQUEST_SEED} if natural_stop else {}
    groups = []
    for clients, prompts in plan.sample_levels.items():
        cfg = replace(base, max_concurrency=clients, stream=True)
        groups.append(Group("sample", clients, prompts, [
            Side("winnow", replace(cfg, base_url=winnow.base_url,
                                   extra_body={"strategy": {"name": "sample"}, **seeded})),
            Side("vllm", replace(cfg, base_url=vllm.base_url, extra_body=seeded or None)),
        ]))  # fmt: skip
    bon = {"strategy": {"name": "best_of_n", "n": N, "reward": reward}, **seeded}
    for clients, prompts in plan.bon_levels.items():
        cfg = replace(base, max_concurrency=clients, stream=False)
        groups.append(Group("best_of_n", clients, prompts, [
            Side("winnow_best_of_n", replace(cfg, base_url=winnow.base_url, extra_body=bon)),
            Side("vllm_n8", replace(cfg, base_url=vllm.base_url, extra_body={"n": N, **seeded})),
            Side("naive", replace(cfg, base_url=vllm.base_url, client="naive_best_of_n",
                                  naive_n=N, reward=reward, reward_base_url=winnow.base_url,
                                  extra_body=seeded or None)),
        ]))  # fmt: skip
        if sequential_naive:  # the for-loop client: an extra side, not the target's baseline
            naive = groups[-1].sides[-1].cfg
            groups[-1].sides.append(Side("naive_sequential", replace(naive, naive_sequential=True)))
    return groups


def rotated(items: Sequence[Side], r: int) -> list[Side]:
    k = r % len(items)
    return [*items[k:], *items[:k]]


# ---- measuring -------------------------------------------------------------------------------


def summarize(run: BenchRun) -> dict[str, Any]:
    """A run's figures without the per-request list, plus the tokens every candidate cost."""
    full = to_json(run)
    full.pop("requests")
    ok = [r for r in run.results if r.success]
    generated = sum(int(r.winnow["generated_tokens"]) if r.winnow else r.output_tokens for r in ok)
    full["generated_tokens"] = generated
    full["generated_throughput"] = generated / max(run.metrics.duration_s, 1e-9)
    full["errors"] = sorted({r.error for r in run.results if not r.success})[:5]
    return full


def measure(cfg: BenchConfig, prompts: list[BenchPrompt], pgids: Mapping[str, int]) -> dict:
    """One side once, with what else the machine did meanwhile."""
    cpu0, busy0, own0 = group_cpu_seconds(list(pgids.values())), machine_busy_seconds(), \
        own_cpu_seconds()  # fmt: skip
    engines = other_engines(list(pgids.values()))
    t = time.monotonic()
    run = asyncio.run(run_benchmark(cfg, prompts))
    wall = time.monotonic() - t
    cpu1, busy1, own1 = group_cpu_seconds(list(pgids.values())), machine_busy_seconds(), \
        own_cpu_seconds()  # fmt: skip
    s = summarize(run)
    ours = {name: cpu1[pg] - cpu0[pg] for name, pg in pgids.items()}
    foreign = (busy1 - busy0) - sum(ours.values()) - (own1 - own0)
    s["server_cpu_s"] = {name: round(v, 2) for name, v in ours.items()}
    s["other_load_cores"] = round(max(foreign, 0.0) / max(wall, 1e-9), 2)
    s["other_engines_seen"] = max(engines, other_engines(list(pgids.values())))
    s["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    return s


def warm_up(groups: list[Group], prompts: list[BenchPrompt], pgids: Mapping[str, int]) -> None:
    """Every prompt once on each server (prefix caches filled alike), then each side once (the
    reward's backbone loaded, the n=8 and naive paths exercised), untimed."""
    seen: set[str] = set()
    for group in groups:
        for side in group.sides:
            if side.cfg.base_url not in seen and side.cfg.client == "openai":
                seen.add(side.cfg.base_url)
                cfg = replace(side.cfg, max_tokens=2, max_concurrency=16, stream=False,
                              extra_body=None)  # fmt: skip
                asyncio.run(run_benchmark(cfg, prompts))
    for group in groups:
        if group.clients == min(g.clients for g in groups if g.comparison == group.comparison):
            for side in group.sides:
                run = asyncio.run(run_benchmark(replace(side.cfg, max_concurrency=1), prompts[:1]))
                if run.metrics.failed:  # the measurements will show it too; say it now
                    print(f"warning: warm-up of {side.name} failed: {run.results[0].error}",
                          flush=True)  # fmt: skip


def run_rounds(
    groups: list[Group], prompts: list[BenchPrompt], pgids: Mapping[str, int], rounds: int,
    started: float,
) -> None:  # fmt: skip
    for r in range(rounds):
        t_round = time.monotonic()
        for group in groups:
            results: dict[str, dict[str, Any]] = {}
            for side in rotated(group.sides, r):
                s = measure(side.cfg, prompts[: group.prompts], pgids)
                results[side.name] = s
                print(f"[round {r + 1}/{rounds}] {group.key:<13} {side.name:<17} {_line(s)}",
                      flush=True)  # fmt: skip
            group.rounds.append(results)
        took = time.monotonic() - t_round
        left = took * (rounds - r - 1)
        print(f"[round {r + 1}/{rounds}] took {took:.0f} s; about {left / 60:.1f} min left "
              f"(elapsed {(time.monotonic() - started) / 60:.1f} min)", flush=True)  # fmt: skip


def _line(s: dict[str, Any]) -> str:
    return (
        f"median E2EL {s['median_e2el_ms']:.0f} ms, p99 {s['p99_e2el_ms']:.0f} ms, "
        f"{s['request_throughput']:.3f} req/s, {s['generated_throughput']:.1f} gen tok/s, "
        f"failed {s['failed']}, other load {s['other_load_cores']:.2f} cores"
    )


# ---- aggregation -----------------------------------------------------------------------------

FIGURES = ("median_e2el_ms", "p99_e2el_ms", "mean_e2el_ms", "median_ttft_ms",
           "request_throughput", "generated_throughput", "other_load_cores")  # fmt: skip


def _median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


def side_medians(rounds: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict]:
    """Per side: the median over rounds of each figure, and the failures summed."""
    out: dict[str, dict[str, Any]] = {}
    for name in rounds[0]:
        runs = [r[name] for r in rounds]
        med = {f: _median([run.get(f) for run in runs]) for f in FIGURES}
        med["failed"] = sum(int(run["failed"]) for run in runs)
        med["completed"] = sum(int(run["completed"]) for run in runs)
        out[name] = med
    return out


def _paired(rounds: Sequence[Mapping[str, Mapping[str, Any]]], fn) -> dict[str, Any]:
    per_round = [fn(r) for r in rounds]
    return {"median": _median(per_round), "rounds": per_round}


def ratios(group: Group) -> dict[str, dict[str, Any]]:
    """The comparison's ratios, computed per round (paired) and their median over rounds."""
    rs = group.rounds

    def rel(a: str, b: str, fig: str, inverse: bool = False):
        def f(r: Mapping[str, Mapping[str, Any]]) -> float | None:
            x, y = r[a].get(fig), r[b].get(fig)
            if not x or not y:
                return None
            return y / x if inverse else x / y

        return f

    if group.comparison == "sample":
        return {
            "median_e2el_overhead": _paired(
                rs, _minus_one(rel("winnow", "vllm", "median_e2el_ms"))
            ),
            "p99_e2el_overhead": _paired(rs, _minus_one(rel("winnow", "vllm", "p99_e2el_ms"))),
            "throughput_loss": _paired(rs, _one_minus(rel("winnow", "vllm", "request_throughput"))),
        }
    extra = {}
    if "naive_sequential" in rs[0]:
        extra["throughput_vs_naive_sequential"] = _paired(
            rs, rel("winnow_best_of_n", "naive_sequential", "request_throughput")
        )
    return {
        **extra,
        "e2el_vs_n8": _paired(rs, rel("winnow_best_of_n", "vllm_n8", "median_e2el_ms")),
        "p99_e2el_vs_n8": _paired(rs, rel("winnow_best_of_n", "vllm_n8", "p99_e2el_ms")),
        "throughput_vs_naive": _paired(rs, rel("winnow_best_of_n", "naive", "request_throughput")),
        "e2el_naive_vs_winnow": _paired(rs, rel("naive", "winnow_best_of_n", "median_e2el_ms")),
    }


def _minus_one(f):
    return lambda r: None if (v := f(r)) is None else v - 1


def _one_minus(f):
    return lambda r: None if (v := f(r)) is None else 1 - v


def verdicts(groups: Sequence[Group], agg: Mapping[str, Any], noisy: bool) -> list[dict]:
    """Each target at each concurrency: measured, met or missed, and why (from the figures)."""
    out = []
    for g in groups:
        a = agg[g.key]
        ra, med = a["ratios"], a["sides"]
        if g.comparison == "sample":
            worst = max(
                ra["median_e2el_overhead"]["median"], ra["p99_e2el_overhead"]["median"],
                ra["throughput_loss"]["median"],
            )  # fmt: skip
            cpu = a["server_cpu_per_request_ms"]
            entry = {
                "comparison": "1. sample vs vLLM", "clients": g.clients,
                "target": f"overhead < {TARGET_OVERHEAD:.0%}", "measured": f"{worst:+.1%} (worst "
                "of median E2EL, p99 E2EL, throughput loss)", "met": worst < TARGET_OVERHEAD,
                "reason": (
                    f"server CPU per request: winnow {cpu['winnow']:.0f} ms vs vLLM "
                    f"{cpu['vllm']:.0f} ms"
                ),
            }  # fmt: skip
        else:
            e2 = ra["e2el_vs_n8"]["median"]
            n8, bon = med["vllm_n8"]["median_e2el_ms"], med["winnow_best_of_n"]["median_e2el_ms"]
            out.append({
                "comparison": "2. best_of_n vs raw n=8", "clients": g.clients,
                "target": f"E2EL <= {TARGET_BON_E2EL}x", "measured": f"{e2:.2f}x",
                "met": e2 <= TARGET_BON_E2EL,
                "reason": f"scoring + selection add {bon - n8:.0f} ms per request (median E2EL "
                          f"{bon:.0f} vs {n8:.0f} ms)",
            })  # fmt: skip
            sp = ra["throughput_vs_naive"]["median"]
            naive_gen = med["naive"]["generated_throughput"]
            bon_gen = med["winnow_best_of_n"]["generated_throughput"]
            entry = {
                "comparison": "3. best_of_n vs naive pipeline", "clients": g.clients,
                "target": f"throughput >= {TARGET_NAIVE_SPEEDUP}x", "measured": f"{sp:.2f}x",
                "met": sp >= TARGET_NAIVE_SPEEDUP,
                "reason": f"generated tok/s: winnow {bon_gen:.0f} vs naive {naive_gen:.0f}; the "
                "naive side's 8 requests are batched by vLLM and its 8 reward requests by "
                "winnow's reward batcher, so only per-request overheads separate them",
            }  # fmt: skip
        out.append(entry)
    for v in out:
        if noisy:
            v["reason"] += " (other load on the machine: not conclusive)"
    return out


def aggregate(groups: Sequence[Group]) -> dict[str, Any]:
    agg = {}
    for g in groups:
        cpu = {  # both servers' CPU during the side's measurement, per completed request
            side.name: _median(
                [
                    sum(r[side.name]["server_cpu_s"].values())
                    * 1000
                    / max(r[side.name]["completed"], 1)
                    for r in g.rounds
                ]
            )
            for side in g.sides
        }
        agg[g.key] = {
            "comparison": g.comparison, "clients": g.clients, "prompts": g.prompts,
            "sides": side_medians(g.rounds), "ratios": ratios(g),
            "server_cpu_per_request_ms": cpu, "rounds": g.rounds,
        }  # fmt: skip
    return agg


def is_noisy(agg: Mapping[str, Any]) -> tuple[float, bool]:
    """The most other work seen during a measurement (cores) and whether it disturbs figures."""
    worst = max(
        (run["other_load_cores"] for a in agg.values() for r in a["rounds"] for run in r.values()),
        default=0.0,
    )
    engines = max(
        (
            run["other_engines_seen"]
            for a in agg.values()
            for r in a["rounds"]
            for run in r.values()
        ),
        default=0,
    )
    return worst, worst > 0.25 or engines > 0


# ---- the report ------------------------------------------------------------------------------


def _f(v: float | None, fmt: str = ".0f") -> str:
    return "-" if v is None else format(v, fmt)


QUICK_NOTE = " — **quick run** (small sizes: it checks the pipeline; the figures are not these)"


def markdown(data: dict[str, Any]) -> str:
    m, cfg, agg = data["machine"], data["config"], data["groups"]
    worst, noisy = data["other_load_cores_max"], data["noisy"]
    lines = [
        "# winnow vs plain vLLM vs a naive client-side pipeline (same model, machine, prompts)",
        "",
        f"- date: {data['date']}" + (QUICK_NOTE if data["quick"] else ""),
        f"- machine: {m['nproc']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, {m['platform']}",
        f"- model: {cfg['model_dir']}; both engines: {cfg['engine_settings']}, KV cache "
        f"{cfg['kv_cache_gib']} GiB; winnow's engine also carries its logits processors",
        f"- prompts: {cfg['task']} evaluation split (winnow.train.tasks, seed {cfg['seed']}), "
        "chat, "
        f"max_tokens {cfg['max_tokens']} "
        + ("with ignore_eos" if cfg.get("ignore_eos", True)
           else f"ending at EOS, every request seeded ({cfg.get('request_seed')}: all sides "
                "sample the same candidates)")
        + f", temperature {cfg['temperature']}; "
        f"best-of-N: N={cfg['n']}, reward `{cfg['reward']}`",
        f"- both servers up; one side measured at a time, {cfg['rounds']} rounds rotating the "
        "order; figures are medians over rounds, ratios the median of per-round ratios",
        f"- other work on the machine during a measurement: up to {worst:.2f} cores; other vLLM "
        f"engines: up to {data['other_engines_max']} "
        + ("(**noisy: wall-clock figures not conclusive**)" if noisy else "(quiet)"),
        f"- command: `{data['command']}` ({data['duration_min']:.1f} min; estimate was "
        f"{data['estimate_min']:.1f} min)",
        "",
        "## 1. winnow `sample` vs plain vLLM (streamed)",
        "",
        "| clients | prompts | server | median E2EL (ms) | p99 E2EL (ms) | median TTFT (ms) "
        "| req/s | tok/s | server CPU (ms/req) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for a in agg.values():
        if a["comparison"] != "sample":
            continue
        for name in ("vllm", "winnow"):
            s = a["sides"][name]
            lines.append(
                f"| {a['clients']} | {a['prompts']} | {name} | {_f(s['median_e2el_ms'])} | "
                f"{_f(s['p99_e2el_ms'])} | {_f(s['median_ttft_ms'])} | "
                f"{_f(s['request_throughput'], '.3f')} | {_f(s['generated_throughput'], '.1f')} "
                f"| {_f(a['server_cpu_per_request_ms'][name])} |"
            )
    lines += [
        "",
        f"winnow relative to vLLM (positive = winnow worse; target < {TARGET_OVERHEAD:.0%}):",
        "",
        "| clients | median E2EL | p99 E2EL | throughput loss |",
        "|---:|---:|---:|---:|",
    ]
    for a in agg.values():
        if a["comparison"] == "sample":
            r = a["ratios"]
            lines.append(
                f"| {a['clients']} | {r['median_e2el_overhead']['median']:+.1%} | "
                f"{r['p99_e2el_overhead']['median']:+.1%} | {r['throughput_loss']['median']:+.1%} |"
            )
    lines += [
        "",
        f"## 2-3. winnow `best_of_n` (N={cfg['n']}) vs raw vLLM n={cfg['n']} vs the naive pipeline",
        "",
        "| clients | prompts | side | median E2EL (ms) | p99 E2EL (ms) | req/s | generated tok/s "
        "| server CPU (ms/req) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for a in agg.values():
        if a["comparison"] != "best_of_n":
            continue
        for name in ("vllm_n8", "winnow_best_of_n", "naive", "naive_sequential"):
            if name not in a["sides"]:
                continue
            s = a["sides"][name]
            lines.append(
                f"| {a['clients']} | {a['prompts']} | {name} | {_f(s['median_e2el_ms'])} | "
                f"{_f(s['p99_e2el_ms'])} | {_f(s['request_throughput'], '.3f')} | "
                f"{_f(s['generated_throughput'], '.1f')} | "
                f"{_f(a['server_cpu_per_request_ms'][name])} |"
            )
    lines += [
        "",
        "| clients | best_of_n E2EL / n=8 E2EL (median, p99) | best_of_n req/s / naive req/s "
        "| naive E2EL / best_of_n E2EL |",
        "|---:|---:|---:|---:|",
    ]
    for a in agg.values():
        if a["comparison"] == "best_of_n":
            r = a["ratios"]
            lines.append(
                f"| {a['clients']} | {r['e2el_vs_n8']['median']:.2f}x, "
                f"{r['p99_e2el_vs_n8']['median']:.2f}x | {r['throughput_vs_naive']['median']:.2f}x "
                f"| {r['e2el_naive_vs_winnow']['median']:.2f}x |"
            )
            if "throughput_vs_naive_sequential" in r:
                seq = r["throughput_vs_naive_sequential"]["median"]
                lines.append(f"| {a['clients']} | vs the sequential naive client: | {seq:.2f}x | |")
    lines += ["", "## Targets", "", "| comparison | clients | target | measured | verdict | why |",
              "|---|---:|---|---|---|---|"]  # fmt: skip
    for v in data["verdicts"]:
        verdict = "met" if v["met"] else "**missed**"
        lines.append(
            f"| {v['comparison']} | {v['clients']} | {v['target']} | {v['measured']} | "
            f"{verdict} | {v['reason']} |"
        )
    lines += ["", "Servers:", ""]
    lines += [f"- {name}: `{cmd}`" for name, cmd in data["servers"].items()]
    if data.get("plot"):
        lines += ["", f"![latency vs concurrency]({data['plot']})"]
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], path: Path) -> None:
    """Latency and throughput vs concurrent clients, for every side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    series: dict[str, list[tuple[int, dict]]] = {}
    for a in data["groups"].values():
        for name, s in a["sides"].items():
            series.setdefault(name, []).append((a["clients"], s))
    styles = {"winnow": "o-", "vllm": "s--", "winnow_best_of_n": "o-", "vllm_n8": "s--",
              "naive": "^:", "naive_sequential": "v:"}  # fmt: skip
    for name, pts in series.items():
        pts.sort()
        xs = [c for c, _ in pts]
        ax = axes[0] if name in ("winnow", "vllm") else axes[1]
        ax.plot(xs, [s["median_e2el_ms"] for _, s in pts], styles[name], label=f"{name} median")
        ax.plot(xs, [s["p99_e2el_ms"] for _, s in pts], styles[name], alpha=0.4,
                label=f"{name} p99")  # fmt: skip
        axes[2].plot(xs, [s["request_throughput"] for _, s in pts], styles[name], label=name)
    axes[0].set(title="sample: E2EL vs clients", ylabel="ms")
    axes[1].set(title=f"best-of-{N}: E2EL vs clients", ylabel="ms")
    axes[2].set(title="request throughput", ylabel="req/s")
    levels = sorted({a["clients"] for a in data["groups"].values()})
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.minorticks_off()
        ax.set_xlabel("concurrent clients")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 rounds: a few minutes")
    p.add_argument("--rounds", type=int, help="rounds (default: 3, quick 2)")
    p.add_argument("--max-tokens", type=int, help="per candidate (default: 64, quick 16)")
    p.add_argument("--kv-cache-gib", type=int, default=2, help="each engine's KV cache (GiB)")
    p.add_argument("--reward", default="default", help="best-of-N reward (winnow's)")
    p.add_argument("--out-dir", type=Path, default=common.results_dir("serving"))
    p.add_argument("--estimate", action="store_true", help="print the duration estimate, exit")
    p.add_argument(
        "--sequential-naive",
        action="store_true",
        help="also measure the naive pipeline as a for-loop client (slow: adds minutes)",
    )
    p.add_argument(
        "--natural-stop", action="store_true",
        help="candidates end at EOS (no ignore_eos), every request seeded so all sides sample "
        "the same candidates; writes serving_compare_natural.*",
    )  # fmt: skip
    p.add_argument(
        "--no-reward-tap", action="store_true",
        help="winnow re-encodes every score (serve --no-reward-tap): the tap's A/B; writes *_notap",
    )  # fmt: skip
    p.add_argument(
        "--best-of-n-only", action="store_true", help="comparisons 2 and 3 only (no sample levels)"
    )
    p.add_argument(
        "--memory-wait", type=float, default=10, help="minutes to wait for free memory (shared)"
    )
    return p.parse_args(argv)


def plan_from(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    if args.best_of_n_only:
        plan = replace(plan, sample_levels={})
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    if args.max_tokens:
        plan = replace(plan, max_tokens=args.max_tokens)
    return plan


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the with-blocks: both servers are stopped


def _yield_to_oom_killer() -> None:
    """On a shared machine, if memory runs out, let the kernel kill this benchmark (and the
    servers it starts, which inherit the setting) rather than someone else's work."""
    with suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("800")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)  # first: --help changes nothing
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _yield_to_oom_killer()
    plan = plan_from(args)
    estimate = estimate_seconds(plan, args.sequential_naive)
    print(f"plan: {plan}\nestimated duration on a quiet machine: {estimate / 60:.1f} min "
          "(refined after round 1)", flush=True)  # fmt: skip
    if args.estimate:
        return 0
    from winnow.models.default_model import build_default_model
    from winnow.settings import default_data_dir

    data_dir = default_data_dir()
    model_dir = build_default_model(data_dir)
    prompts = winnow_task_prompts(TASK, plan.num_prompts, seed=0)
    winnow, vllm, engine_args = servers(
        model_dir, args.kv_cache_gib, data_dir, ["--no-reward-tap"] if args.no_reward_tap else []
    )
    groups = build_groups(plan, winnow, vllm, args.reward, args.sequential_naive, args.natural_stop)
    started = time.monotonic()
    logs = Path(tempfile.mkdtemp(prefix="serving-compare-"))
    # per server: KV cache + ~2 GiB of engine worker + ~1.5 GiB server (winnow: the backbone)
    with both_running([winnow, vllm], logs, need_gib=args.kv_cache_gib + 3.5,
                      patience_s=60 * args.memory_wait) as up:  # fmt: skip
        pgids = {name: info["pgid"] for name, info in up.items()}
        t = time.monotonic()
        warm_up(groups, prompts, pgids)
        print(f"warm-up done in {time.monotonic() - t:.0f} s", flush=True)
        run_rounds(groups, prompts, pgids, plan.rounds, started)
    duration = time.monotonic() - started
    agg = aggregate(groups)
    worst, noisy = is_noisy(agg)
    name = (
        "serving_compare"
        + ("_natural" if args.natural_stop else "")
        + ("_notap" if args.no_reward_tap else "")
        + ("_quick" if args.quick else "")
    )
    settings = {k: v for k, v in engine_args.items() if k not in ("model", "logits_processors")}
    data: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "command": common.command(__file__, argv),
        "duration_min": duration / 60,
        "estimate_min": estimate / 60,
        "machine": common.machine_info(),
        "config": {
            "model_dir": str(model_dir), "task": TASK, "seed": 0, "max_tokens": plan.max_tokens,
            "temperature": TEMPERATURE, "ignore_eos": not args.natural_stop,
            "reward_tap": not args.no_reward_tap,
            "request_seed": REQUEST_SEED if args.natural_stop else None, "endpoint": "chat", "n": N,
            "reward": args.reward, "rounds": plan.rounds, "kv_cache_gib": args.kv_cache_gib,
            "sample_levels": plan.sample_levels, "bon_levels": plan.bon_levels,
            "engine_settings": ", ".join(f"{k}={v}" for k, v in settings.items()),
            "winnow_logits_processors": list(engine_args.get("logits_processors") or []),
        },
        "servers": {s.name: shlex.join(s.command) for s in (winnow, vllm)},
        "startup_s": {n: info["startup_s"] for n, info in up.items()},
        "other_load_cores_max": worst,
        "other_engines_max": max(
            run["other_engines_seen"] for a in agg.values() for r in a["rounds"]
            for run in r.values()
        ),
        "noisy": noisy,
        "groups": agg,
    }  # fmt: skip
    data["verdicts"] = verdicts(groups, agg, noisy)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        plot(data, args.out_dir / f"{name}.png")
        data["plot"] = f"{name}.png"
    except Exception as exc:  # the plot is a convenience; the figures are in the JSON
        print(f"no plot: {exc!r}", flush=True)
    (args.out_dir / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out_dir / f"{name}.md").write_text(markdown(data))
    print(markdown(data))
    written = [args.out_dir / f"{name}{suffix}" for suffix in (".json", ".md", ".png")]
    common.record(written, script=__file__, argv=argv, wall_s=duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Soak test on loopback: mixed strategies at a rate past saturation, with random cancellations.

Every registered strategy (GET /v1/strategies) is sent with small parameters, on both endpoints,
streamed and not, at a Poisson rate above what the server can serve, for a bounded time. A share
of the clients give up mid-request (they close the connection). At the end the script waits for
in-flight requests, then reads /metrics: the engine must hold no running request.

Reported: requests sent, accepted (not refused at admission), completed, rejected with 429,
failed (any other error status, or an in-band stream error), cancelled by the client, and engine
requests still running at the end (must be 0). JSON + markdown under
benchmarks/results/reliability/.

    # the real engine (starts `winnow serve` on a free loopback port; ~1 min to start)
    python -m benchmarks reliability soak --duration 60 --rate 6
    # the fake engine in-process (seconds; what CI runs, see tests/unit/test_soak.py)
    python -m benchmarks reliability soak --engine fake --duration 10 --rate 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks import common

PROMPTS = [
    "What is 17 + 25? Think step by step.",
    "Name three prime numbers greater than 10.",
    "Calculate 6 * 7 and explain.",
    "Is 91 a prime number? Answer briefly.",
    "Write one sentence about the sea.",
    "Solve for x: 2x + 3 = 11.",
]
# Small parameters per strategy, so that a request is short; a strategy not listed runs with
# its defaults (it is still covered: the mix comes from GET /v1/strategies).
SMALL: dict[str, dict[str, Any]] = {
    "sample": {},
    "best_of_n": {"n": 4},
    "best_of_majority": {"n": 4},
    "tree_search": {"n": 2, "beam_width": 2, "max_depth": 2, "step_tokens": 24},
    "cards": {"max_rejections": 2, "max_segment_tokens": 16},
}
FAKE_EXTRA: dict[str, dict[str, Any]] = {"cards": {"r_star": 0.5}}  # fake rewards: no calibration


@dataclass
class Outcome:
    strategy: str
    endpoint: str
    stream: bool
    kind: str  # completed | rejected_429 | failed | cancelled
    status: int | None = None
    code: str | None = None
    latency: float = 0.0


@dataclass
class SoakReport:
    engine: str
    duration_s: float
    rate_per_s: float
    cancel_fraction: float
    max_running_requests: int
    max_queued_requests: int
    sent: int = 0
    accepted: int = 0
    completed: int = 0
    rejected_429: int = 0
    failed: int = 0
    cancelled: int = 0
    engine_running_at_end: int = -1
    requests_in_flight_at_end: float = -1
    queued_at_end: float = -1
    wall_s: float = 0.0
    completed_per_s: float = 0.0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    failures: dict[str, int] = field(default_factory=dict)
    by_strategy: dict[str, dict[str, int]] = field(default_factory=dict)
    strategies: list[str] = field(default_factory=list)
    started_at: str = ""
    load_average: list[float] = field(default_factory=list)  # 1-min load at start and end
    command: str = ""


# ---- one client -------------------------------------------------------------------------------


def _body(strategy: str, params: dict[str, Any], chat: bool, stream: bool, prompt: str) -> dict:
    body: dict[str, Any] = {
        "max_tokens": 24,
        "temperature": 0.8,
        "stream": stream,
        "strategy": {"name": strategy, **params},
    }
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


async def _send(
    http: httpx.AsyncClient, strategy: str, body: dict, chat: bool, give_up: float | None
) -> Outcome:
    path = "/v1/chat/completions" if chat else "/v1/completions"
    outcome = Outcome(strategy, "chat" if chat else "completions", bool(body["stream"]), "failed")
    started = time.monotonic()

    async def call() -> None:
        async with http.stream("POST", path, json=body) as r:
            outcome.status = r.status_code
            text = (await r.aread()).decode(errors="replace")
        if r.status_code == 429:
            outcome.kind = "rejected_429"
        elif r.status_code != 200:
            outcome.code = _error_code(text)
        elif body["stream"] and ('data: {"error"' in text or "data: [DONE]" not in text):
            outcome.code = _error_code(text) or "stream_incomplete"
        else:
            outcome.kind = "completed"

    try:
        if give_up is None:
            await call()
        else:
            await asyncio.wait_for(call(), give_up)
    except TimeoutError:
        outcome.kind = "cancelled" if give_up is not None else "failed"
    except httpx.HTTPError as exc:
        outcome.code = type(exc).__name__
    outcome.latency = time.monotonic() - started
    return outcome


def _error_code(text: str) -> str | None:
    match = re.search(r'"code":\s*"([^"]+)"', text)
    return match.group(1) if match else None


# ---- the run ----------------------------------------------------------------------------------


async def drive(
    base_url: str,
    *,
    duration: float,
    rate: float,
    cancel_fraction: float,
    seed: int,
    fake: bool,
    api_key: str | None = None,
    settle: float = 120.0,
    progress: bool = True,
) -> tuple[list[Outcome], list[str], float]:
    """Send requests for ``duration`` seconds; return outcomes, strategies, wall time."""
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=httpx.Timeout(300.0), limits=limits
    ) as http:
        listed = (await http.get("/v1/strategies")).json()["data"]
        names = sorted(s["name"] for s in listed)
        tasks: list[asyncio.Task[Outcome]] = []
        started = time.monotonic()
        next_at = started
        while (now := time.monotonic()) - started < duration:
            if now < next_at:
                await asyncio.sleep(next_at - now)
                continue
            next_at += rng.expovariate(rate)
            strategy = names[len(tasks) % len(names)]
            params = {**SMALL.get(strategy, {}), **(FAKE_EXTRA.get(strategy, {}) if fake else {})}
            chat = rng.random() < 0.5
            stream = rng.random() < 0.3
            give_up = rng.uniform(0.05, 3.0) if rng.random() < cancel_fraction else None
            body = _body(strategy, params, chat, stream, rng.choice(PROMPTS))
            tasks.append(asyncio.ensure_future(_send(http, strategy, body, chat, give_up)))
            if progress and len(tasks) % 50 == 0:
                done = sum(t.done() for t in tasks)
                print(f"  {now - started:5.1f} s: sent {len(tasks)}, finished {done}", flush=True)
        # stop sending; let in-flight requests finish (bounded), then give up on the rest
        done, pending = await asyncio.wait(tasks, timeout=settle) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        outcomes = []
        for t in tasks:
            if t.cancelled():
                outcomes.append(Outcome("?", "?", False, "failed", code="unfinished_at_end"))
            else:
                outcomes.append(t.result())
        return outcomes, names, time.monotonic() - started


def read_gauges(base_url: str, wait: float = 15.0) -> dict[str, float]:
    """Engine requests running, requests in flight and queued, from /metrics; waits (bounded)
    for the engine to finish aborting what cancelled clients left."""
    deadline = time.monotonic() + wait
    while True:
        text = httpx.get(f"{base_url}/metrics", timeout=10).text
        gauges = {
            "engine_running": _metric(text, "winnow_engine_running_requests"),
            "in_flight": sum(_metric_all(text, "winnow_requests_in_flight")),
            "queued": _metric(text, "winnow_requests_queued"),
        }
        if gauges["engine_running"] == 0 or time.monotonic() > deadline:
            return gauges
        time.sleep(0.25)


def _metric(text: str, name: str) -> float:
    values = _metric_all(text, name)
    return values[0] if values else float("nan")


def _metric_all(text: str, name: str) -> list[float]:
    pattern = re.compile(rf"^{name}(?:{{[^}}]*}})? ([0-9.eE+-]+|NaN)$", re.M)
    return [float(v) for v in pattern.findall(text)]


def summarize(report: SoakReport, outcomes: list[Outcome]) -> SoakReport:
    kinds = Counter(o.kind for o in outcomes)
    report.sent = len(outcomes)
    report.completed = kinds["completed"]
    report.rejected_429 = kinds["rejected_429"]
    report.failed = kinds["failed"]
    report.cancelled = kinds["cancelled"]
    report.accepted = report.sent - report.rejected_429
    report.failures = dict(
        Counter(f"{o.status}:{o.code}" for o in outcomes if o.kind == "failed").most_common()
    )
    by: dict[str, Counter[str]] = {}
    for o in outcomes:
        by.setdefault(o.strategy, Counter())[o.kind] += 1
    report.by_strategy = {k: dict(v) for k, v in sorted(by.items())}
    latencies = sorted(o.latency for o in outcomes if o.kind == "completed")
    if latencies:
        report.latency_p50_s = round(latencies[len(latencies) // 2], 3)
        report.latency_p95_s = round(
            latencies[min(int(len(latencies) * 0.95), len(latencies) - 1)], 3
        )
    report.completed_per_s = round(report.completed / max(report.wall_s, 1e-9), 2)
    return report


def markdown(report: SoakReport) -> str:
    r = report
    lines = [
        f"# Soak test ({r.engine} engine)",
        "",
        f"{r.duration_s:g} s of arrivals at {r.rate_per_s:g} req/s (Poisson), "
        f"{r.cancel_fraction:.0%} of clients give up after 0.05-3 s; server caps "
        f"{r.max_running_requests} running + {r.max_queued_requests} queued. "
        f"Strategies: {', '.join(r.strategies)}; both endpoints, 30% streamed. "
        f"Started {r.started_at}, wall {r.wall_s:.1f} s; 1-min load average at start and "
        f"end {r.load_average} on {os.cpu_count()} cores (a shared machine).",
        "",
        "| sent | accepted | completed | rejected 429 | failed | cancelled "
        "| engine running at end |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r.sent} | {r.accepted} | {r.completed} | {r.rejected_429} | {r.failed} | "
        f"{r.cancelled} | **{r.engine_running_at_end}** |",
        "",
        f"Completed {r.completed_per_s} req/s; latency of completed requests p50 "
        f"{r.latency_p50_s} s, p95 {r.latency_p95_s} s. In flight at the end "
        f"{r.requests_in_flight_at_end:g}, queued {r.queued_at_end:g}.",
        "",
        "| strategy | completed | rejected 429 | failed | cancelled |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, kinds in r.by_strategy.items():
        lines.append(
            f"| {name} | {kinds.get('completed', 0)} | {kinds.get('rejected_429', 0)} | "
            f"{kinds.get('failed', 0)} | {kinds.get('cancelled', 0)} |"
        )
    if r.failures:
        lines += [
            "",
            "Failures (status:code): " + ", ".join(f"{k} x{v}" for k, v in r.failures.items()),
        ]
    lines += ["", f"Command: `{r.command}`", ""]
    return "\n".join(lines)


# ---- servers ----------------------------------------------------------------------------------


@contextmanager
def fake_server(max_running: int, max_queued: int, delay: float) -> Iterator[str]:
    """The app on the fake engine (``delay`` per call) with batched fake rewards, in-process."""
    from winnow.engine.fake import FakeEngine
    from winnow.rewards.fake import fake_rewards
    from winnow.rewards.registry import RewardSet
    from winnow.server.app import create_app
    from winnow.server.background import BackgroundServer
    from winnow.settings import Settings

    settings = Settings(
        max_running_requests=max_running,
        max_queued_requests=max_queued,
        request_timeout=60,
        shutdown_timeout=5,
    )
    rewards = RewardSet(fake_rewards(delay=0.005, batched=True))
    app = create_app(settings, FakeEngine(delay=delay), rewards)
    with tempfile.TemporaryDirectory() as values, BackgroundServer(app) as server:
        _placeholder_value_models(Path(values))
        yield server.base_url


def _placeholder_value_models(root: Path) -> None:
    """vas names value models; the fake engine applies none, so when winnow ships none (yet) a
    placeholder ``default`` stands in for the fake run."""
    from winnow.heads.value import available

    if "default" not in available() and not os.environ.get("WINNOW_VALUES_DIR"):
        (root / "default").mkdir()
        (root / "default" / "value.json").write_text("{}")
        os.environ["WINNOW_VALUES_DIR"] = str(root)


@contextmanager
def real_server(max_running: int, max_queued: int, log: Path) -> Iterator[str]:
    """`winnow serve` (the embedded default model and rewards) as a subprocess on loopback."""
    from winnow.clients.launch import free_port, server_process

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = common.winnow_serve(
        port, "--max-running-requests", str(max_running), "--max-queued-requests",
        str(max_queued), "--request-timeout", "120", "--shutdown-timeout", "10",
        "--log-level", "warning", "--kv-cache-gib", "1",
    )  # fmt: skip
    with server_process(command, url, log, timeout=600):
        yield url


def run(args: argparse.Namespace) -> SoakReport:
    report = SoakReport(
        engine=args.engine,
        duration_s=args.duration,
        rate_per_s=args.rate,
        cancel_fraction=args.cancel_fraction,
        max_running_requests=args.max_running,
        max_queued_requests=args.max_queued,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        command=common.command(__file__, args.argv),
    )
    if args.engine == "fake":
        server = fake_server(args.max_running, args.max_queued, args.fake_delay)
    elif args.base_url:
        server = _existing(args.base_url)
    else:
        log = Path(tempfile.gettempdir()) / f"winnow_soak_server_{os.getpid()}.log"
        print(f"server log: {log}")
        server = real_server(args.max_running, args.max_queued, log)
    with server as url:
        print(f"server up at {url}; sending for {args.duration:g} s at {args.rate:g} req/s")
        report.load_average.append(round(os.getloadavg()[0], 1))
        outcomes, names, wall = asyncio.run(
            drive(
                url,
                duration=args.duration,
                rate=args.rate,
                cancel_fraction=args.cancel_fraction,
                seed=args.seed,
                fake=args.engine == "fake",
                settle=args.settle,
                progress=not args.quiet,
            )
        )
        gauges = read_gauges(url)
        report.load_average.append(round(os.getloadavg()[0], 1))
    report.strategies = names
    report.wall_s = round(wall, 2)
    report.engine_running_at_end = int(gauges["engine_running"])
    report.requests_in_flight_at_end = gauges["in_flight"]
    report.queued_at_end = gauges["queued"]
    return summarize(report, outcomes)


@contextmanager
def _existing(url: str) -> Iterator[str]:
    yield url.rstrip("/").removesuffix("/v1")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--engine", choices=["real", "fake"], default="real")
    p.add_argument("--base-url", help="soak a running server instead (real engine only)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of arrivals")
    p.add_argument("--rate", type=float, default=6.0, help="arrivals per second (Poisson)")
    p.add_argument("--cancel-fraction", type=float, default=0.2)
    p.add_argument("--max-running", type=int, default=8, help="server --max-running-requests")
    p.add_argument("--max-queued", type=int, default=8, help="server --max-queued-requests")
    p.add_argument("--fake-delay", type=float, default=0.2, help="fake engine seconds per call")
    p.add_argument("--settle", type=float, default=120.0, help="wait for in-flight at the end")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=common.results_dir("reliability"))
    p.add_argument("--name", help="result file stem (default soak_<engine>)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"soak_{args.engine}"
    (args.out / f"{stem}.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    text = markdown(report)
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    common.record([args.out / f"{stem}.json", args.out / f"{stem}.md"], cmd=report.command)
    return 0 if report.engine_running_at_end == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

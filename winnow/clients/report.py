"""A run's report: vLLM's fixed-width table, a JSON result file with vLLM's key names, a plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from winnow.clients.loadgen import BenchRun
from winnow.clients.stats import Dist

WIDTH = 50
LATENCIES = (
    ("ttft", "TTFT", "Time to First Token"),
    ("tpot", "TPOT", "Time per Output Token (excl. 1st token)"),
    ("itl", "ITL", "Inter-token Latency"),
    ("e2el", "E2EL", "End-to-end Latency"),
)
WINNOW_ROWS = (
    ("generated_tokens", "Generated tokens (kept + discarded):"),
    ("discarded_tokens", "Discarded tokens:"),
    ("engine_calls", "Engine calls:"),
    ("reward_calls", "Reward calls:"),
)


def _rate(rate: float) -> str | float:
    return "inf" if math.isinf(rate) else rate


def _row(label: str, value: Any) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float):
        text = f"{value:.2f}"
    else:
        text = str(value)
    return f"{label:<40} {text}"


def _rule(title: str, fill: str = "-") -> str:
    return f" {title} ".center(WIDTH, fill) if title else fill * WIDTH


def _latency_rows(short: str, title: str, dist: Dist) -> list[str]:
    return [
        _rule(title),
        _row(f"Mean {short} (ms):", dist.mean),
        _row(f"Median {short} (ms):", dist.median),
        _row(f"Std {short} (ms):", dist.std),
        _row(f"P99 {short} (ms):", dist.p99),
    ]


def _client_rows(run: BenchRun) -> list[str]:
    cfg = run.config
    if cfg.client == "openai":
        return []
    return [
        _row(
            "Client:",
            f"{cfg.client} (n={cfg.naive_n}, reward {cfg.reward!r}"
            + (", sequential)" if cfg.naive_sequential else ")"),
        ),
        _row("Rewards at:", cfg.reward_base_url or cfg.base_url),
    ]


def format_table(run: BenchRun) -> str:
    """The fixed-width report of one run (vLLM's layout, plus winnow's usage when present)."""
    cfg, m = run.config, run.metrics
    lines = [
        _rule("Serving Benchmark Result", "="),
        _row("Endpoint:", f"{cfg.endpoint} {'(stream)' if cfg.stream else '(no stream)'}"),
        *_client_rows(run),
        _row("Successful requests:", m.completed),
        _row("Failed requests:", m.failed),
        _row("Maximum request concurrency:", cfg.max_concurrency),
        _row("Request rate configured (RPS):", _rate(cfg.request_rate)),
        _row("Benchmark duration (s):", m.duration_s),
        _row("Total input tokens:", m.total_input_tokens),
        _row("Total generated tokens:", m.total_output_tokens),
        _row("Request throughput (req/s):", m.request_throughput),
    ]
    if m.request_goodput is not None:
        lines.append(_row("Request goodput (req/s):", m.request_goodput))
    lines += [
        _row("Output token throughput (tok/s):", m.output_throughput),
        _row("Total token throughput (tok/s):", m.total_token_throughput),
    ]
    for key, short, title in LATENCIES:
        lines += _latency_rows(short, title, getattr(m, key))
    if m.winnow is not None:
        lines.append(_rule("winnow usage (totals)"))
        lines += [_row(label, m.winnow.get(key)) for key, label in WINNOW_ROWS]
    lines.append(_rule("", "="))
    return "\n".join(lines)


def _dist_keys(name: str, dist: Dist) -> dict[str, Any]:
    out: dict[str, Any] = {
        f"mean_{name}_ms": dist.mean,
        f"median_{name}_ms": dist.median,
        f"std_{name}_ms": dist.std,
        f"p99_{name}_ms": dist.p99,
    }
    out.update({f"{p}_{name}_ms": v for p, v in dist.percentiles.items()})
    return out


def to_json(run: BenchRun) -> dict[str, Any]:
    """One run as a JSON object; key names follow vLLM's result files where they exist."""
    cfg, m = run.config, run.metrics
    out: dict[str, Any] = {
        "date": run.date,
        "backend": "openai-compatible",
        "base_url": cfg.base_url,
        "endpoint": cfg.endpoint,
        "model_id": run.model,
        "num_prompts": len(run.results),
        "request_rate": _rate(cfg.request_rate),
        "burstiness": cfg.burstiness,
        "max_concurrency": cfg.max_concurrency,
        "num_warmups": cfg.num_warmups,
        "stream": cfg.stream,
        "max_tokens": cfg.max_tokens,
        "temperature": cfg.temperature,
        "ignore_eos": cfg.ignore_eos,
        "extra_body": dict(cfg.extra_body or {}),
        "seed": cfg.seed,
        "goodput_slos_ms": dict(cfg.goodput or {}),
        "client": cfg.client,
        "duration": m.duration_s,
        "completed": m.completed,
        "failed": m.failed,
        "total_input_tokens": m.total_input_tokens,
        "total_output_tokens": m.total_output_tokens,
        "request_throughput": m.request_throughput,
        "request_goodput": m.request_goodput,
        "output_throughput": m.output_throughput,
        "total_token_throughput": m.total_token_throughput,
    }
    for key, _, _ in LATENCIES:
        out.update(_dist_keys(key, getattr(m, key)))
    if cfg.client == "naive_best_of_n":
        out.update(
            naive_n=cfg.naive_n,
            reward=cfg.reward,
            reward_base_url=cfg.reward_base_url,
            naive_sequential=cfg.naive_sequential,
        )
    out["winnow_usage"] = m.winnow
    out.update(run.extra)
    out["requests"] = [asdict(r) for r in run.results]
    return out


def write_json(runs: BenchRun | Sequence[BenchRun], path: Path) -> None:
    """One run as an object, a sweep as ``{"runs": [...]}``."""
    data = to_json(runs) if isinstance(runs, BenchRun) else {"runs": [to_json(r) for r in runs]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def plot_sweep(runs: Sequence[BenchRun], path: Path) -> None:
    """Latency (median and p99 E2EL, median TTFT when streamed) and throughput vs offered load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [str(_rate(r.config.request_rate)) for r in runs]
    xs = list(range(len(runs)))
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    lat.plot(xs, [r.metrics.e2el.median for r in runs], "o-", label="median E2EL")
    lat.plot(xs, [r.metrics.e2el.p99 for r in runs], "s--", label="p99 E2EL")
    if runs and runs[0].config.stream:
        lat.plot(xs, [r.metrics.ttft.median for r in runs], "^:", label="median TTFT")
    lat.set(xlabel="offered load (req/s)", ylabel="latency (ms)", title="Latency vs offered load")
    thr.plot(xs, [r.metrics.request_throughput for r in runs], "o-", label="requests/s")
    thr.set(xlabel="offered load (req/s)", ylabel="achieved req/s", title="Throughput")
    for ax in (lat, thr):
        ax.set_xticks(xs, labels)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

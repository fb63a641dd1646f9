"""Per-request timings and the statistics of a run, as vLLM's ``bench serve`` computes them.

Times are kept in seconds and reported in milliseconds. TPOT = (E2EL - TTFT) / (output_len - 1)
(time per output token after the first); requests with one output token count as TPOT 0 for
goodput and are left out of the TPOT distribution. Percentiles interpolate linearly (numpy's
default), std is the population std: both as vLLM.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SLO_METRICS = ("ttft", "tpot", "e2el")
WINNOW_COUNTERS = ("generated_tokens", "discarded_tokens", "engine_calls", "reward_calls")


@dataclass
class RequestResult:
    """One request as the client saw it. ``start`` is seconds after the run began."""

    success: bool
    start: float = 0.0
    e2el: float = 0.0
    ttft: float | None = None  # streaming: first output chunk; non-streaming: the whole answer
    itl: list[float] = field(default_factory=list)  # gaps between output chunks (streaming)
    streamed: bool = True
    prompt_tokens: int = 0
    output_tokens: int = 0
    winnow: dict[str, Any] | None = None  # the response's usage.winnow, when the server sent it
    error: str = ""

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first; None when not streamed or < 2 tokens."""
        if not self.streamed or self.ttft is None or self.output_tokens < 2:
            return None
        return (self.e2el - self.ttft) / (self.output_tokens - 1)


@dataclass(frozen=True)
class Dist:
    """A distribution in milliseconds; all None when there were no values."""

    count: int
    mean: float | None
    median: float | None
    std: float | None
    p99: float | None
    percentiles: dict[str, float] = field(default_factory=dict)  # "p50", "p90", ... -> ms


def percentile(values_s: Sequence[float], p: float) -> float:
    """The p-th percentile of ``values_s`` (seconds) in milliseconds, linear interpolation."""
    return float(np.percentile(np.asarray(values_s, dtype=float), p)) * 1000.0


def distribution(values_s: Sequence[float], percentiles: Iterable[float] = (50, 90, 99)) -> Dist:
    if not values_s:
        return Dist(0, None, None, None, None)
    arr = np.asarray(values_s, dtype=float) * 1000.0
    pcts = {f"p{p:g}": float(np.percentile(arr, p)) for p in percentiles}
    return Dist(
        count=len(arr),
        mean=float(arr.mean()),
        median=float(np.median(arr)),
        std=float(arr.std()),
        p99=float(np.percentile(arr, 99)),
        percentiles=pcts,
    )


def parse_goodput(pairs: Sequence[str]) -> dict[str, float]:
    """``["ttft:500", "e2el:2000"]`` -> ``{"ttft": 500.0, "e2el": 2000.0}`` (milliseconds)."""
    slos: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep or name not in SLO_METRICS:
            raise ValueError(f"goodput SLOs are KEY:MS with KEY in {SLO_METRICS}, not {pair!r}")
        try:
            ms = float(value)
        except ValueError:
            raise ValueError(f"goodput SLO {pair!r}: {value!r} is not a number") from None
        if not math.isfinite(ms) or ms < 0:
            raise ValueError(f"goodput SLO {pair!r} must be a non-negative number of ms")
        slos[name] = ms
    return slos


def meets_slos(result: RequestResult, slos_ms: Mapping[str, float]) -> bool:
    """A completed request within every SLO. TPOT of a one-token answer counts as 0 (vLLM)."""
    if not result.success:
        return False
    observed = {"ttft": result.ttft, "tpot": result.tpot, "e2el": result.e2el}
    if result.streamed and observed["tpot"] is None:
        observed["tpot"] = 0.0
    for name, limit in slos_ms.items():
        value = observed[name]
        if value is None or value * 1000.0 > limit:
            return False
    return True


@dataclass(frozen=True)
class BenchMetrics:
    completed: int
    failed: int
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    request_goodput: float | None
    good_completed: int | None
    ttft: Dist
    tpot: Dist
    itl: Dist
    e2el: Dist
    winnow: dict[str, int] | None  # totals of usage.winnow counters, when the server sent them


def winnow_totals(results: Sequence[RequestResult]) -> dict[str, int] | None:
    seen = [r.winnow for r in results if r.success and r.winnow]
    if not seen:
        return None
    return {k: sum(int(w.get(k) or 0) for w in seen) for k in WINNOW_COUNTERS}


def compute_metrics(
    results: Sequence[RequestResult], duration_s: float, slos_ms: Mapping[str, float] | None = None
) -> BenchMetrics:
    """The run's statistics over its completed requests; throughputs over ``duration_s``."""
    ok = [r for r in results if r.success]
    dur = max(duration_s, 1e-9)
    inputs = sum(r.prompt_tokens for r in ok)
    outputs = sum(r.output_tokens for r in ok)
    good = sum(meets_slos(r, slos_ms) for r in ok) if slos_ms else None
    tpots = [t for r in ok if (t := r.tpot) is not None]
    return BenchMetrics(
        completed=len(ok),
        failed=len(results) - len(ok),
        duration_s=duration_s,
        total_input_tokens=inputs,
        total_output_tokens=outputs,
        request_throughput=len(ok) / dur,
        output_throughput=outputs / dur,
        total_token_throughput=(inputs + outputs) / dur,
        request_goodput=None if good is None else good / dur,
        good_completed=good,
        ttft=distribution([r.ttft for r in ok if r.ttft is not None]),
        tpot=distribution(tpots),
        itl=distribution([gap for r in ok for gap in r.itl]),
        e2el=distribution([r.e2el for r in ok]),
        winnow=winnow_totals(results),
    )

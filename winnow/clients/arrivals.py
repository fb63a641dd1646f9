"""When each request is sent: vLLM ``bench serve``'s arrival process.

Rate ``inf`` sends everything at t = 0. Otherwise the gaps are gamma-distributed with shape
``burstiness`` and mean ``1 / rate`` (burstiness 1 is a Poisson process; below 1 burstier, above
1 more even, ``inf`` constant gaps), then rescaled so the last request leaves at
``n / rate`` exactly, which keeps throughput comparable across seeds (as vLLM does).
"""

from __future__ import annotations

import math

import numpy as np


def arrival_times(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Send offsets in seconds from the start of the run, non-decreasing, one per request."""
    if n < 0:
        raise ValueError("n must be >= 0")
    if rate <= 0 or math.isnan(rate):
        raise ValueError(f"request rate must be > 0 (or inf), not {rate}")
    if burstiness <= 0 or math.isnan(burstiness):
        raise ValueError(f"burstiness must be > 0, not {burstiness}")
    if n == 0:
        return []
    if math.isinf(rate):
        return [0.0] * n
    if math.isinf(burstiness):
        gaps = np.full(n, 1.0 / rate)
    else:
        rng = np.random.default_rng(seed)
        gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    offsets = np.cumsum(gaps)
    offsets *= (n / rate) / offsets[-1]
    return [float(t) for t in offsets]


def parse_rate(text: str) -> float:
    """``"inf"`` or a positive number of requests per second."""
    rate = float(text)
    if not rate > 0:
        raise ValueError(f"request rate must be > 0 or inf, not {text!r}")
    return rate


def parse_rates(text: str) -> list[float]:
    """``"1,2,4,inf"`` -> ``[1.0, 2.0, 4.0, inf]``."""
    rates = [parse_rate(part.strip()) for part in text.split(",") if part.strip()]
    if not rates:
        raise ValueError("a rate sweep needs at least one rate")
    return rates

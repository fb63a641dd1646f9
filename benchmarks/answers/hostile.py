"""Time winnow.answers.final on hostile answers, each in a fresh subprocess with a hard cap.

    python -m benchmarks answers hostile [--cap 20]

Every input is timed twice in its own process (cold: sympy import and the worker pool's start
are excluded by a warm-up call on a harmless symbolic answer): ``canonical(x)`` (what grouping
does with a candidate's answer) and ``equivalent("5", x)`` (what the verifier does with a
reference). A process still running at the cap is killed and reported as ">cap". Prints its
table; writes no results.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

HOSTILE = [
    "((10^{1000})^{1000})^{1000}",
    "\\sin((10^{1000})^{1000})",
    "(2^1000)^1000/(3^1000)^1000",
    "(a+b+c+d)^4*(a+b+c+d+1)^4*(a+b+c+d+2)^4",
    "9^{9^{9}}",
    "10^{10^{10}}",
    "\\exp(\\exp(\\exp(\\exp(10))))",
    "(x+y+z+w)^{40}",
]

CHILD = r"""
import resource, sys, time, json
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
from winnow.answers.final import canonical, equivalent
canonical("\\frac{x^2-1}{x-1}")  # warm: sympy import, worker start
what, x = sys.argv[1], sys.argv[2]
t = time.perf_counter()
r = canonical(x) if what == "canonical" else equivalent("5", x)
shown = None if r is None else str(r)[:40]
print(json.dumps({"seconds": time.perf_counter() - t, "result": shown}))
"""


def run(what: str, answer: str, cap: float) -> str:
    started = time.perf_counter()
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, what, answer],
            capture_output=True,
            text=True,
            timeout=cap,
        )
    except subprocess.TimeoutExpired:
        return f">{cap:g} s (killed)"
    if out.returncode != 0:
        return f"failed after {time.perf_counter() - started:.1f} s: {out.stderr.strip()[-120:]}"
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return f"{row['seconds'] * 1000:.1f} ms -> {row['result']}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cap", type=float, default=20.0)
    args = p.parse_args(argv)
    print("| input | canonical(x) | equivalent('5', x) |")
    print("|---|---|---|")
    for answer in HOSTILE:
        cells = [run(what, answer, args.cap) for what in ("canonical", "equivalent")]
        print(f"| `{answer}` | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()

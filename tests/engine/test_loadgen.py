"""The load generator (engine): a run on loopback against the real engine."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.serving import LiveServer
from winnow.clients import report
from winnow.clients.loadgen import BenchConfig, run_benchmark
from winnow.clients.prompts import BenchPrompt


def _prompts(n: int) -> list[BenchPrompt]:
    return [BenchPrompt(f"question {i}") for i in range(n)]


@pytest.mark.engine
def test_run_against_real_engine(live_server: LiveServer):
    cfg = BenchConfig(
        base_url=live_server.base_url,
        api_key=live_server.api_key,
        endpoint="chat",
        max_tokens=8,
        temperature=0.0,
        ignore_eos=True,
        max_concurrency=2,
        extra_body={"strategy": {"name": "sample"}},
        progress=False,
    )
    run = asyncio.run(run_benchmark(cfg, _prompts(3)))
    m = run.metrics
    assert (m.completed, m.failed) == (3, 0), [r.error for r in run.results]
    assert all(r.output_tokens == 8 and 0 < r.ttft < r.e2el for r in run.results)
    assert m.winnow is not None and m.winnow["generated_tokens"] == 24
    assert m.itl.count > 0 and m.tpot.mean > 0
    assert "Serving Benchmark Result" in report.format_table(run)

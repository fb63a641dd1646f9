"""The load generator (unit): statistics and arrivals on hand-made numbers, then runs on loopback
against the FakeEngine app (the real engine: tests/engine/test_loadgen.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.support.serving import LiveServer
from winnow.cli import build_parser
from winnow.cli import main as cli_main
from winnow.clients import report
from winnow.clients.arrivals import arrival_times, parse_rates
from winnow.clients.loadgen import BenchConfig, build_body, run_benchmark
from winnow.clients.prompts import BenchPrompt, load_prompts_file, take
from winnow.clients.stats import (
    RequestResult,
    compute_metrics,
    distribution,
    meets_slos,
    parse_goodput,
    percentile,
)

# ---- statistics ------------------------------------------------------------------------------


def test_distribution_matches_hand_computed_values():
    values = [0.1 * i for i in range(1, 11)]  # 100 ms .. 1000 ms
    d = distribution(values)
    assert d.count == 10
    assert d.mean == pytest.approx(550.0)
    assert d.median == pytest.approx(550.0)
    assert d.p99 == pytest.approx(991.0)  # 100 + 0.99 * 9 * 100, linear interpolation
    assert d.std == pytest.approx(math.sqrt(sum((v * 1000 - 550) ** 2 for v in values) / 10))
    assert d.percentiles["p90"] == pytest.approx(910.0)
    assert percentile([1.0, 3.0], 50) == pytest.approx(2000.0)
    assert distribution([]).mean is None


def test_tpot_formula():
    r = RequestResult(success=True, e2el=1.0, ttft=0.1, output_tokens=10)
    assert r.tpot == pytest.approx(0.1)  # (1.0 - 0.1) / (10 - 1)
    assert replace(r, output_tokens=1).tpot is None
    assert replace(r, streamed=False).tpot is None


def test_goodput_counts_requests_within_every_slo():
    slos = parse_goodput(["ttft:200", "tpot:50", "e2el:1000"])
    assert slos == {"ttft": 200.0, "tpot": 50.0, "e2el": 1000.0}
    good = RequestResult(success=True, e2el=0.6, ttft=0.15, output_tokens=11)  # tpot 45 ms
    slow_tpot = replace(good, e2el=0.9)  # tpot 75 ms
    slow_ttft = replace(good, ttft=0.25, e2el=0.7)  # tpot 45 ms, ttft over
    one_token = RequestResult(success=True, e2el=0.15, ttft=0.15, output_tokens=1)  # tpot as 0
    failed = RequestResult(success=False, e2el=0.01, error="boom")
    assert [meets_slos(r, slos) for r in (good, slow_tpot, slow_ttft, one_token, failed)] == [
        True, False, False, True, False,
    ]  # fmt: skip
    m = compute_metrics([good, slow_tpot, slow_ttft, one_token, failed], 2.0, slos)
    assert (m.good_completed, m.request_goodput) == (2, 1.0)
    assert compute_metrics([good], 1.0).request_goodput is None
    for bad in (["ttft"], ["latency:5"], ["e2el:-1"], ["tpot:abc"]):
        with pytest.raises(ValueError):
            parse_goodput(bad)


def test_compute_metrics_throughput_tokens_and_winnow_totals():
    usage = {"generated_tokens": 40, "discarded_tokens": 30, "engine_calls": 2, "reward_calls": 1}
    a = RequestResult(True, e2el=1.0, ttft=0.2, itl=[0.1, 0.3], prompt_tokens=5,
                      output_tokens=10, winnow=usage)  # fmt: skip
    b = RequestResult(True, e2el=2.0, ttft=0.4, itl=[0.2], prompt_tokens=7, output_tokens=6)
    c = RequestResult(False, error="HTTP 500")
    m = compute_metrics([a, b, c], duration_s=4.0)
    assert (m.completed, m.failed) == (2, 1)
    assert (m.total_input_tokens, m.total_output_tokens) == (12, 16)
    assert m.request_throughput == pytest.approx(0.5)
    assert m.output_throughput == pytest.approx(4.0)
    assert m.total_token_throughput == pytest.approx(7.0)
    assert m.itl.count == 3 and m.itl.mean == pytest.approx(200.0)
    assert m.tpot.mean == pytest.approx((800 / 9 + 1600 / 5) / 2)
    assert m.e2el.median == pytest.approx(1500.0)
    assert m.winnow == usage


# ---- arrivals --------------------------------------------------------------------------------


def test_infinite_rate_sends_everything_at_once():
    assert arrival_times(5, math.inf) == [0.0] * 5


def test_arrivals_are_seeded_and_end_at_n_over_rate():
    a = arrival_times(200, 4.0, 1.0, seed=7)
    assert a == arrival_times(200, 4.0, 1.0, seed=7)
    assert a != arrival_times(200, 4.0, 1.0, seed=8)
    assert all(x <= y for x, y in itertools.pairwise(a))
    assert a[-1] == pytest.approx(200 / 4.0)
    assert arrival_times(4, 2.0, math.inf) == pytest.approx([0.5, 1.0, 1.5, 2.0])


def test_burstiness_shapes_the_gaps():
    def cv(burstiness: float) -> float:
        gaps = np.diff([0.0, *arrival_times(4000, 10.0, burstiness, seed=0)])
        return float(gaps.std() / gaps.mean())

    assert cv(1.0) == pytest.approx(1.0, abs=0.08)  # Poisson: exponential gaps, CV 1
    assert cv(0.25) == pytest.approx(2.0, abs=0.25)  # gamma shape k: CV 1 / sqrt(k)
    assert cv(4.0) == pytest.approx(0.5, abs=0.05)
    for bad in ((0.0, 1.0), (-1.0, 1.0), (1.0, 0.0)):
        with pytest.raises(ValueError):
            arrival_times(3, *bad)
    assert parse_rates("1, 2,inf") == [1.0, 2.0, math.inf]


# ---- request bodies and prompts ----------------------------------------------------------------


def test_extra_body_is_merged_into_every_request():
    cfg = BenchConfig(
        endpoint="chat",
        max_tokens=32,
        temperature=0.0,
        ignore_eos=True,
        extra_body={"strategy": {"name": "best_of_n", "n": 4}, "max_tokens": 16},
    )
    body = build_body(cfg, "smol", BenchPrompt("2 + 2 ="))
    assert body == {
        "model": "smol",
        "messages": [{"role": "user", "content": "2 + 2 ="}],
        "max_tokens": 16,
        "temperature": 0.0,
        "ignore_eos": True,
        "strategy": {"name": "best_of_n", "n": 4},
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    plain = build_body(replace(cfg, endpoint="completions", stream=False, extra_body=None),
                       None, BenchPrompt("p"))  # fmt: skip
    assert plain == {"prompt": "p", "max_tokens": 32, "temperature": 0.0, "ignore_eos": True}
    with pytest.raises(ValueError, match="TPOT"):
        BenchConfig(stream=False, goodput={"tpot": 10.0})


def test_prompt_files(tmp_path: Path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        '"plain"\n{"prompt": "keyed"}\n\n'
        '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}\n'
    )
    prompts = load_prompts_file(jsonl)
    assert [p.text for p in prompts] == ["plain", "keyed", "s\nu"]
    assert prompts[2].chat_messages()[0] == {"role": "system", "content": "s"}
    assert prompts[0].chat_messages() == [{"role": "user", "content": "plain"}]
    txt = tmp_path / "p.txt"
    txt.write_text("one\n\ntwo\n")
    assert [p.text for p in take(load_prompts_file(txt), 5)] == ["one", "two"] * 2 + ["one"]
    (tmp_path / "bad.jsonl").write_text('{"nothing": 1}\n')
    with pytest.raises(ValueError):
        load_prompts_file(tmp_path / "bad.jsonl")


def test_cli_parses_vllm_bench_options():
    args = build_parser().parse_args(
        ["bench", "serve", "--base-url", "http://127.0.0.1:9/v1", "--endpoint", "chat",
         "--request-rate", "inf", "--burstiness", "0.5", "--max-concurrency", "4",
         "--extra-body", '{"strategy": "sample"}', "--no-stream",
         "--goodput", "ttft:100", "e2el:900", "--rate-sweep", "1,inf"]
    )  # fmt: skip
    assert (args.command, args.bench_command, args.endpoint) == ("bench", "serve", "chat")
    assert math.isinf(args.request_rate) and args.burstiness == 0.5
    assert args.extra_body == {"strategy": "sample"} and args.stream is False
    assert args.goodput == ["ttft:100", "e2el:900"] and args.rate_sweep == [1.0, math.inf]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "serve", "--extra-body", "[1]"])
    with pytest.raises(SystemExit):
        cli_main(["bench", "serve", "--no-such-option"])
    assert cli_main(["bench", "serve", "--goodput", "nope:1", "--prompts-file", "/none"]) == 2


# ---- runs against the FakeEngine app on loopback ----------------------------------------------


def _prompts(n: int) -> list[BenchPrompt]:
    return [BenchPrompt(f"question {i}") for i in range(n)]


def _cfg(server: LiveServer, **kw) -> BenchConfig:
    base = {"base_url": server.base_url, "api_key": server.api_key, "progress": False}
    return BenchConfig(**{**base, "max_tokens": 8, **kw})


def test_streaming_run_times_every_token(fake_server: LiveServer):
    run = asyncio.run(run_benchmark(_cfg(fake_server, num_warmups=2), _prompts(6)))
    m = run.metrics
    assert (m.completed, m.failed) == (6, 0)
    assert run.model == "fake-model"
    for r in run.results:
        assert 0 < r.ttft < r.e2el
        assert r.output_tokens == 8 and len(r.itl) == 7  # one chunk per token on the fake
        assert r.winnow is not None and r.winnow["generated_tokens"] == 8
    assert m.total_output_tokens == 48 and m.winnow["generated_tokens"] == 48
    assert m.tpot.count == 6 and m.itl.count == 42
    assert m.total_input_tokens == sum(r.prompt_tokens for r in run.results) > 0


def test_non_streaming_chat_run(fake_server: LiveServer):
    cfg = _cfg(fake_server, endpoint="chat", stream=False, goodput={"e2el": 10_000.0})
    run = asyncio.run(run_benchmark(cfg, _prompts(4)))
    assert run.metrics.completed == 4
    assert all(r.ttft == r.e2el and not r.itl for r in run.results)
    assert run.metrics.tpot.count == 0 and run.metrics.good_completed == 4


def test_max_concurrency_one_runs_requests_back_to_back(fake_server: LiveServer):
    run = asyncio.run(run_benchmark(_cfg(fake_server, max_concurrency=1), _prompts(5)))
    spans = sorted((r.start, r.start + r.e2el) for r in run.results)
    assert all(nxt[0] >= prev[1] - 1e-3 for prev, nxt in itertools.pairwise(spans))


def test_request_rate_spreads_the_sends(fake_server: LiveServer):
    cfg = _cfg(fake_server, request_rate=40.0, seed=3)
    run = asyncio.run(run_benchmark(cfg, _prompts(8)))
    offsets = arrival_times(8, 40.0, 1.0, seed=3)
    starts = sorted(r.start for r in run.results)
    # lower bounds only: no request leaves before its arrival time (a loaded machine may be late)
    assert all(s >= o - 0.01 for s, o in zip(starts, offsets, strict=True))
    assert starts[-1] - starts[0] >= offsets[-1] - offsets[0] - 0.01
    assert run.metrics.duration_s >= offsets[-1]


def test_failures_are_counted_not_raised(fake_server: LiveServer):
    cfg = replace(_cfg(fake_server), api_key="wrong")
    run = asyncio.run(run_benchmark(cfg, _prompts(3)))
    assert (run.metrics.completed, run.metrics.failed) == (0, 3)
    assert all("401" in r.error for r in run.results)
    assert "Failed requests:" in report.format_table(run)


def test_cli_rate_sweep_writes_json_and_plot(fake_server: LiveServer, tmp_path: Path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("alpha\nbeta\n")
    out = tmp_path / "sweep.json"
    code = cli_main(
        ["bench", "serve", "--base-url", fake_server.base_url, "--api-key", "fake-key",
         "--prompts-file", str(prompts), "--num-prompts", "4", "--max-tokens", "6",
         "--rate-sweep", "50,inf", "--goodput", "ttft:5000", "tpot:1000",
         "--result-file", str(out), "--disable-tqdm"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("Serving Benchmark Result") == 2
    assert "Request goodput (req/s):" in printed and "Generated tokens" in printed
    runs = json.loads(out.read_text())["runs"]
    assert [r["request_rate"] for r in runs] == [50.0, "inf"]
    for r in runs:
        assert r["completed"] == 4 and r["total_output_tokens"] == 24
        assert r["median_e2el_ms"] > 0 and r["p99_ttft_ms"] > 0 and r["request_goodput"] > 0
        assert len(r["requests"]) == 4 and r["winnow_usage"]["generated_tokens"] == 24
    assert out.with_suffix(".png").stat().st_size > 1000


def test_cli_reasoning_gym_prompts(fake_server: LiveServer, tmp_path: Path):
    out = tmp_path / "one.json"
    code = cli_main(
        ["bench", "serve", "--base-url", fake_server.base_url, "--api-key", "fake-key",
         "--endpoint", "chat", "--task", "basic_arithmetic", "--seed", "0",
         "--num-prompts", "3", "--max-tokens", "4", "--no-stream",
         "--extra-body", '{"strategy": {"name": "sample"}}', "--result-file", str(out),
         "--disable-tqdm"]
    )  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert result["completed"] == 3 and result["extra_body"] == {"strategy": {"name": "sample"}}
    assert result["stream"] is False and result["endpoint"] == "chat"


def test_winnow_task_prompts_carry_the_instruction_and_cycle():
    from winnow.clients.prompts import reasoning_gym_prompts
    from winnow.train.tasks import INSTRUCTION, TASKS, split_of

    assert "add_sub_1digit" in TASKS
    prompts = reasoning_gym_prompts("add_sub_1digit", 6, seed=0)
    assert prompts == reasoning_gym_prompts("add_sub_1digit", 6, seed=0)
    assert len({p.text for p in prompts}) == 6
    for p in prompts:
        assert p.text.endswith(INSTRUCTION)
        assert p.chat_messages() == [{"role": "user", "content": p.text}]
        assert split_of(p.text.removesuffix(" " + INSTRUCTION)) == "eval"

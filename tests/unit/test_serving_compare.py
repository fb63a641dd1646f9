"""The serving comparison script's arithmetic: ratios, verdicts, report (no server is started)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks.serving import compare as sc
from winnow.clients.loadgen import BenchConfig


def test_vllm_gets_winnows_engine_settings_as_flags():
    args = {"model": "/m", "enable_prefix_caching": True, "seed": 0, "dtype": "float32",
            "logits_processors": ["x:Y"], "enable_chunked_prefill": False,
            "max_num_batched_tokens": 2048}  # fmt: skip
    assert sc.vllm_flags(args) == [
        "--enable-prefix-caching", "--seed", "0", "--dtype", "float32",
        "--no-enable-chunked-prefill", "--max-num-batched-tokens", "2048",
    ]  # fmt: skip
    winnow, vllm, engine_args = sc.servers(Path("/models/Smol"), 1, Path("/data"))
    assert engine_args["enable_chunked_prefill"] is False and engine_args["dtype"] == "float32"
    assert "--kv-cache-gib" in winnow.command and "--served-model-name" in vllm.command
    assert vllm.env["VLLM_CPU_KVCACHE_SPACE"] == "1" and winnow.port != vllm.port


def test_rotation_puts_every_side_first_in_turn():
    sides = ["a", "b", "c"]
    assert [sc.rotated(sides, r)[0] for r in range(4)] == ["a", "b", "c", "a"]
    assert sc.rotated(["x", "y"], 1) == ["y", "x"]


def test_estimate_is_bounded_and_interpolates():
    assert sc.decode_rate(1) == 17.0 and sc.decode_rate(32) == 156.0
    assert 17.0 < sc.decode_rate(4) < 85.0 and sc.decode_rate(1000) == 180.0
    full, quick = sc.estimate_seconds(sc.FULL), sc.estimate_seconds(sc.QUICK)
    assert quick < 6 * 60 < full < 25 * 60
    assert sc.FULL.num_prompts == 32 and sc.QUICK.rounds == 2
    # 2 waves of 4 x 8 sequences x 64 tokens at the 32-sequence rate, plus fixed costs
    assert sc.cell_seconds(4, 8, 64, 8, True) == pytest.approx(
        2 * (32 * 64 / 156.0 + sc.REQUEST_S + sc.SCORING_S)
    )


def _run(e2el: float, rps: float, failed: int = 0, load: float = 0.0) -> dict:
    return {"median_e2el_ms": e2el, "p99_e2el_ms": 1.5 * e2el, "mean_e2el_ms": e2el,
            "median_ttft_ms": 100.0, "request_throughput": rps, "generated_throughput": 64 * rps,
            "other_load_cores": load, "other_engines_seen": 0, "failed": failed,
            "completed": 8, "server_cpu_s": {"winnow": 1.6, "vllm": 0.0}}  # fmt: skip


def _groups():
    cfg = BenchConfig()
    sample = sc.Group("sample", 4, 8, [sc.Side("winnow", cfg), sc.Side("vllm", cfg)])
    sample.rounds = [
        {"winnow": _run(1050, 0.95), "vllm": _run(1000, 1.0)},
        {"winnow": _run(1300, 0.80), "vllm": _run(1000, 1.0)},  # a disturbed round
        {"winnow": _run(1100, 0.90), "vllm": _run(1000, 1.0)},
    ]
    bon = sc.Group("best_of_n", 4, 8, [sc.Side(n, cfg) for n in
                                        ("winnow_best_of_n", "vllm_n8", "naive")])  # fmt: skip
    bon.rounds = [
        {"winnow_best_of_n": _run(1200, 0.5), "vllm_n8": _run(1000, 0.6),
         "naive": _run(1500, 0.30)},
        {"winnow_best_of_n": _run(1400, 0.4), "vllm_n8": _run(1000, 0.6),
         "naive": _run(1500, 0.25, load=0.6)},
    ]  # fmt: skip
    return [sample, bon]


def test_ratios_are_paired_per_round_then_medianed():
    groups = _groups()
    agg = sc.aggregate(groups)
    r = agg["sample@4"]["ratios"]
    assert r["median_e2el_overhead"]["rounds"] == pytest.approx([0.05, 0.30, 0.10])
    assert r["median_e2el_overhead"]["median"] == pytest.approx(0.10)
    assert r["throughput_loss"]["median"] == pytest.approx(0.10)
    assert agg["sample@4"]["sides"]["winnow"]["median_e2el_ms"] == 1100
    assert agg["sample@4"]["server_cpu_per_request_ms"]["winnow"] == pytest.approx(200.0)
    b = agg["best_of_n@4"]["ratios"]
    assert b["e2el_vs_n8"]["median"] == pytest.approx(1.3)  # (1.2 + 1.4) / 2
    assert b["throughput_vs_naive"]["rounds"] == pytest.approx([0.5 / 0.3, 0.4 / 0.25])
    assert b["e2el_naive_vs_winnow"]["rounds"] == pytest.approx([1.25, 1500 / 1400])
    worst, noisy = sc.is_noisy(agg)
    assert worst == 0.6 and noisy

    v = {(x["comparison"][0], x["clients"]): x for x in sc.verdicts(groups, agg, noisy=False)}
    assert not v[("1", 4)]["met"] and v[("1", 4)]["measured"].startswith("+10.0%")
    assert not v[("2", 4)]["met"] and v[("2", 4)]["measured"] == "1.30x"
    assert "300 ms per request" in v[("2", 4)]["reason"]
    assert v[("3", 4)]["met"] and v[("3", 4)]["measured"] == "1.63x"  # target 1.3x
    assert all("not conclusive" in x["reason"] for x in sc.verdicts(groups, agg, noisy=True))


def test_markdown_has_every_table_and_the_verdicts():
    groups = _groups()
    agg = sc.aggregate(groups)
    data = {
        "date": "d", "quick": True, "command": "python -m benchmarks serving compare --quick",
        "duration_min": 4.2, "estimate_min": 3.9,
        "machine": {"nproc": 2, "cpu_model": "cpu", "memory_gib": 24.0, "platform": "linux"},
        "config": {"model_dir": "m", "task": "add_sub_1digit", "seed": 0, "max_tokens": 16,
                   "temperature": 0.7, "n": 8, "reward": "default", "rounds": 3,
                   "kv_cache_gib": 2, "engine_settings": "dtype=float32"},
        "servers": {"winnow": "winnow serve", "vllm": "vllm serve"},
        "other_load_cores_max": 0.6, "other_engines_max": 0, "noisy": True, "groups": agg,
    }  # fmt: skip
    data["verdicts"] = sc.verdicts(groups, agg, True)
    md = sc.markdown(data)
    assert "quick run" in md and "python -m benchmarks serving compare --quick" in md
    assert "| 4 | 8 | winnow | 1100 | 1650 | 100 | 0.900 | 57.6 | 200 |" in md
    assert "| 4 | +10.0% | +10.0% | +10.0% |" in md
    assert "| 4 | 1.30x, 1.30x | 1.63x | 1.16x |" in md
    assert md.count("**missed**") == 2 and "noisy" in md  # 1.63x meets the 1.3x target
    assert not math.isnan(agg["best_of_n@4"]["sides"]["naive"]["request_throughput"])


def test_the_sequential_naive_client_is_an_extra_side():
    winnow, vllm, _ = sc.servers(Path("/models/Smol"), 1, Path("/data"))
    plain = sc.build_groups(sc.QUICK, winnow, vllm, "default")
    extra = sc.build_groups(sc.QUICK, winnow, vllm, "default", sequential_naive=True)
    bon = [g for g in extra if g.comparison == "best_of_n"]
    assert [s.name for s in bon[0].sides][-1] == "naive_sequential"
    assert bon[0].sides[-1].cfg.naive_sequential and not bon[0].sides[-2].cfg.naive_sequential
    assert bon[0].sides[-1].cfg.base_url == vllm.base_url
    assert bon[0].sides[-1].cfg.reward_base_url == winnow.base_url
    assert all(len(g.sides) == (3 if g.comparison == "best_of_n" else 2) for g in plain)
    assert sc.estimate_seconds(sc.FULL, True) > sc.estimate_seconds(sc.FULL)
    groups = _groups()
    for r in groups[1].rounds:
        r["naive_sequential"] = _run(5000, 0.1)
    agg = sc.aggregate(groups)
    seq = agg["best_of_n@4"]["ratios"]["throughput_vs_naive_sequential"]
    assert seq["rounds"] == pytest.approx([5.0, 4.0]) and seq["median"] == pytest.approx(4.5)

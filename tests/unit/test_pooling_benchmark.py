"""The pooling benchmark's pure parts: its workload, intervals, summaries, the RM server's flags
(benchmarks/rewards/pooling.py; no engine, no server)."""

from __future__ import annotations

import json

import pytest

from benchmarks.rewards import pooling as bench


def words(text: str) -> int:
    return len(text.split())


def test_the_workload_is_deterministic_fresh_per_rep_and_step_structured():
    one = bench.workload(0, words, n=16)
    assert one == bench.workload(0, words, n=16)
    other = bench.workload(1, words, n=16)
    assert other.prompt != one.prompt and other.candidates != one.candidates
    assert words(one.prompt) >= bench.PROMPT_TOKENS
    assert len(one.candidates) == 16 and len(one.lengths) == 16
    for steps, length in zip(one.candidates, one.lengths, strict=True):
        assert bench.STEPS[0] <= len(steps) <= bench.STEPS[1]
        assert all(s.endswith("\n\n") for s in steps[:-1]) and not steps[-1].endswith("\n")
        assert "So the answer is" in steps[-1]
        assert bench.TOKENS[0] - 20 <= length <= bench.TOKENS[1] + 20  # within a sentence


def test_intervals():
    assert bench.median_ci([1.0, 2.0, 3.0])["median"] == 2.0
    c = bench.median_ci([5.0] * 7)
    assert (c["lo"], c["hi"], c["n"]) == (5.0, 5.0, 7)
    r = bench.ratio_ci([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert r["ratio"] == pytest.approx(2.0) and r["lo"] == pytest.approx(2.0)
    assert r["hi"] == pytest.approx(2.0)
    spread = bench.ratio_ci([1.0, 3.0, 2.0, 5.0, 4.0], [1.0] * 5)
    assert spread["lo"] <= spread["ratio"] <= spread["hi"] and spread["lo"] < spread["hi"]
    assert bench.ratio_ci([], [])["n"] == 0
    assert bench.best_index([0.1, -2.0, 0.7, 0.3]) == 2


def _row(clients, arm, q, latency, ok=True):
    return {"clients": clients, "arm": arm, "question": q, "latency_s": latency, "ok": ok,
            "error": None if ok else "boom", "generated_tokens": 800, "reward_tokens": 900,
            "reward_cached_tokens": None}  # fmt: skip


def test_the_pipeline_summary_pairs_questions_and_leaves_failures_out():
    rows = [_row(1, "winnow", q, 10.0 + q) for q in range(4)]
    rows += [_row(1, "naive", q, 20.0 + 2 * q) for q in range(3)]
    rows.append(_row(1, "naive", 3, 1.0, ok=False))
    s = bench.summarize_pipeline(rows)["1"]
    assert s["requests_paired"] == 3 and s["arms"]["naive"]["failed"] == 1
    assert s["arms"]["winnow"]["latency_s"]["median"] == 11.0
    assert s["winnow_over_naive_latency"]["ratio"] == pytest.approx(11.0 / 22.0)
    assert s["errors"] == ["boom"]
    assert "winnow / naive" in bench.pipeline_report(
        {"date": "d", "machine": "m", "quick": True, "rm_dir": "rm", "questions": 4,
         "command": "c", "summary": {"1": s}, "servers": {"rm": "vllm ..."}}
    )  # fmt: skip


def test_the_scoring_summary_pairs_reps():
    rows = []
    for rep in range(-1, 3):
        for arm, speed in (("hf", 10.0), ("pooling", 25.0 + rep)):
            rows.append({"family": "prm", "rep": rep, "arm": arm, "warmup": rep < 0,
                         "items_per_s": speed, "wall_s": 64 / speed, "reward_tokens": 100,
                         "reward_cached_tokens": 50, "candidate_tokens": 12800,
                         "prompt_tokens": 120, "max_abs_score_diff": 1e-4})  # fmt: skip
    s = bench.summarize_scoring(rows, ["prm"])["prm"]
    assert s["reps"] == 3
    assert s["pooling_over_hf_items_per_s"]["ratio"] == pytest.approx(2.6)
    assert s["arms"]["hf"]["items_per_s"]["median"] == 10.0


def test_the_rm_server_gets_winnows_pooling_engine_settings(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForSequenceClassification"],
                    "max_position_embeddings": 8192})
    )  # fmt: skip
    flags = bench.rm_server_flags(tmp_path)
    assert flags[flags.index("--runner") + 1] == "pooling"
    assert "--enable-prefix-caching" in flags and "--model" not in flags
    pooler = json.loads(flags[flags.index("--pooler-config") + 1])
    assert pooler["seq_pooling_type"] == "LAST"

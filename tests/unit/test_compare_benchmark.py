"""The strategy comparison benchmark's configuration loading and summary (offline)."""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks.quality import compare


def _row(correct: bool, tokens: int, seconds: float) -> dict:
    usage = {"generated_tokens": tokens, "engine_calls": 2, "reward_calls": 3,
             "reward_tokens": 100, "cached_tokens": 5, "prefilled_tokens": 10}  # fmt: skip
    return {"correct": correct, "seconds": seconds, "usage": usage}


def test_presets_and_config_file(tmp_path):
    assert compare.PRESETS["beam4x2_er16"]["partial_tokens"] == 16
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"label": "mine", "strategy": {"name": "sample"}}]))
    configs = compare.load_configs(["bon4", "mine"], path)
    assert list(configs) == ["bon4", "mine"] and configs["mine"] == {"name": "sample"}
    with pytest.raises(SystemExit, match="unknown configuration"):
        compare.load_configs(["nope"], None)


def test_summary_pairs_with_the_baseline():
    rows = {
        "base": [_row(c, 100, 1.0) for c in (True, False, False, True)],
        "new": [_row(c, 50, 3.0) for c in (True, True, False, True)],
    }
    args = argparse.Namespace(baseline="base", tasks=["add_sub_1digit"], max_tokens=8,
                              temperature=0.7, concurrency=1)  # fmt: skip
    summary = compare.summarise(rows, {"base": {}, "new": {}}, args, 1.0, 4)
    new = summary["results"]["new"]
    assert new["accuracy"] == 0.75 and new["vs_baseline"]["diff"] == pytest.approx(0.25)
    assert new["tokens_vs_baseline"] == 0.5 and new["seconds_median"] == 3.0
    assert new["cached_fraction"] == 0.5
    text = compare.report(summary)
    assert "| new | 75.0" in text and "+25.0" in text


def test_correctness_is_the_verifiers():
    assert compare.is_correct("5 * 3 = 15. The answer is 15.", "15")
    assert not compare.is_correct("The answer is 16.", "15")


def test_returned_answers_scored_by_a_reward_are_averaged():
    rows = {"base": [_row(True, 10, 1.0) | {"reward": r} for r in (0.2, 0.4)]}
    args = argparse.Namespace(baseline="base", tasks=["add_sub_1digit"], max_tokens=8,
                              temperature=0.7, concurrency=1, score_with="default")  # fmt: skip
    summary = compare.summarise(rows, {"base": {}}, args, 1.0, 2)
    assert summary["results"]["base"]["reward"] == pytest.approx(0.3)
    assert "Mean `default` reward" in compare.report(summary)
    unscored = compare.summarise({"base": [_row(True, 10, 1.0)]}, {"base": {}}, args, 1.0, 1)
    assert "reward" not in unscored["results"]["base"]

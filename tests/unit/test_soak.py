"""The soak benchmark in a bounded CI form: the fake engine (0.2 s per call) in-process, every
registered strategy, a rate past saturation, 20% of clients giving up mid-request. Nothing may
fail, the server must shed load with 429s, and no engine request may outlive the storm."""

from __future__ import annotations

import json

import pytest

from benchmarks.reliability import soak
from tests.support.fakes import placeholder_value_models
from winnow import strategies


@pytest.mark.timeout(180)
def test_soak_on_the_fake_engine(tmp_path, monkeypatch):
    placeholder_value_models(monkeypatch, tmp_path / "values")
    argv = ["--engine", "fake", "--duration", "5", "--rate", "50", "--cancel-fraction", "0.2",
            "--settle", "60", "--out", str(tmp_path), "--quiet"]  # fmt: skip
    assert soak.main(argv) == 0
    report = json.loads((tmp_path / "soak_fake.json").read_text())
    assert report["engine_running_at_end"] == 0
    assert report["requests_in_flight_at_end"] == 0
    assert report["queued_at_end"] == 0
    assert report["failed"] == 0, report["failures"]
    assert report["rejected_429"] > 0  # past saturation, load is shed
    assert report["cancelled"] > 0
    assert report["completed"] > 0
    assert report["sent"] == (
        report["completed"] + report["rejected_429"] + report["failed"] + report["cancelled"]
    )
    assert report["accepted"] == report["sent"] - report["rejected_429"]
    assert set(report["strategies"]) == set(strategies.names())
    for name in strategies.names():
        assert report["by_strategy"][name].get("completed", 0) > 0, name
    assert "engine running at end" in (tmp_path / "soak_fake.md").read_text()

"""benchmarks/ as one package behind one command, and its results named by their manifests.

Every file under ``benchmarks/results/`` is listed by exactly one run of a ``MANIFEST.json``
(except the manifests and the training data kept there), every listed file exists, every
command names a benchmark that exists, and ``docs/results.md`` is what the manifests say."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import common
from benchmarks.__main__ import catalog
from benchmarks.__main__ import main as benchmarks_main

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
# training data that lives under benchmarks/results/ for now (not results of a run)
TRAINING_DATA = ("winnow/train/data/quality.rows.jsonl", "winnow/train/data/")
FIELDS = ("id", "files", "command", "git", "date", "machine", "wall_s", "backs")


def result_files() -> list[str]:
    """Files under benchmarks/results/ as git sees the tree (ignored files left out), that exist."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "--", "benchmarks/results"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.split("\n")  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        out = [str(p.relative_to(ROOT)) for p in RESULTS.rglob("*") if p.is_file()]
    return sorted(
        {
            f
            for f in out
            if f
            and (ROOT / f).is_file()
            and Path(f).name != common.MANIFEST
            and not f.startswith(TRAINING_DATA)
        }
    )


def entries() -> list[tuple[str, dict]]:
    out = []
    for folder, path in common.manifests().items():
        data = json.loads(path.read_text())
        assert isinstance(data, list), path
        out += [(folder, e) for e in data]
    return out


def test_every_result_file_is_listed_by_exactly_one_run():
    listed: dict[str, list[str]] = {}
    for folder, e in entries():
        for f in e["files"]:
            listed.setdefault(f, []).append(f"{folder}/{e['id']}")
    files = result_files()
    assert files, "no results found"
    unlisted = [f for f in files if f not in listed]
    assert not unlisted, f"not in any MANIFEST.json: {unlisted}"
    twice = {f: runs for f, runs in listed.items() if len(runs) > 1}
    assert not twice, f"listed by more than one run: {twice}"
    missing = [f for f in listed if not (ROOT / f).is_file()]
    assert not missing, f"listed but missing: {missing}"


def test_entries_have_every_field_and_sit_in_their_folder():
    seen: set[tuple[str, str]] = set()
    for folder, e in entries():
        assert all(k in e for k in FIELDS), (folder, e.get("id"), set(FIELDS) - set(e))
        assert (folder, e["id"]) not in seen, f"duplicate id {folder}/{e['id']}"
        seen.add((folder, e["id"]))
        assert e["files"] and all(
            f.startswith(f"benchmarks/results/{folder}/") for f in e["files"]
        ), e["id"]
        assert e["wall_s"] is None or e["wall_s"] >= 0


def test_commands_name_benchmarks_that_exist():
    known = catalog()
    for _, e in entries():
        for suite, name in re.findall(r"python -m benchmarks (\w+) (\w+)", e["command"]):
            assert name in known.get(suite, {}), f"{e['id']}: {suite} {name} does not exist"


def test_results_page_is_up_to_date():
    assert common.PAGE.read_text() == common.results_page(), (
        "docs/results.md is stale: run `python -m benchmarks results`"
    )


def test_readme_names_only_results_that_exist():
    """A result the README names exists (a stem names its files; an --out is written later)."""
    text = (ROOT / "README.md").read_text()
    for path in sorted(set(re.findall(r"(?<!--out\s)benchmarks/results/[\w./*-]+\w", text))):
        if path.startswith(TRAINING_DATA):
            continue
        found = list(ROOT.glob(path)) or list(ROOT.glob(path + ".*"))
        assert found, f"README.md names {path}, which does not exist"


def test_every_benchmark_imports_and_answers_help():
    suites = catalog()
    assert {"quality", "rewards", "adaptive", "serving", "speculative"} <= set(suites)
    for suite, names in suites.items():
        for name, text in names.items():
            assert text, f"{suite} {name}: no one-line description"
            module = importlib.import_module(f"benchmarks.{suite}.{name}")
            out = io.StringIO()
            with pytest.raises(SystemExit) as done, contextlib.redirect_stdout(out):
                module.main(["--help"])
            assert done.value.code == 0 and "usage:" in out.getvalue(), (suite, name)


def test_the_one_command_lists_and_dispatches(capsys):
    assert benchmarks_main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "quality" in listing and "late_rejection" in listing
    assert benchmarks_main(["nope"]) == 2
    argv = sys.argv
    try:
        with pytest.raises(SystemExit) as done:
            benchmarks_main(["quality", "compare", "--help"])
    finally:
        sys.argv = argv
    assert done.value.code == 0
    assert "usage: python -m benchmarks quality compare" in capsys.readouterr().out


def test_record_replaces_its_entry_and_keeps_what_it_backs(tmp_path, monkeypatch):
    results = tmp_path / "benchmarks" / "results"
    monkeypatch.setattr(common, "ROOT", tmp_path)
    monkeypatch.setattr(common, "RESULTS", results)
    monkeypatch.setattr(common, "PAGE", tmp_path / "docs" / "results.md")
    (results / "quality").mkdir(parents=True)
    a, b = results / "quality" / "x.json", results / "quality" / "x.md"
    a.write_text("{}")
    b.write_text("# x")
    script = ROOT / "benchmarks" / "quality" / "run.py"
    common.record([a, b, tmp_path / "elsewhere.json"], script=script, argv=["--n", "8"])
    manifest = results / "quality" / common.MANIFEST
    (first,) = json.loads(manifest.read_text())
    assert first["id"] == "x" and first["command"] == "python -m benchmarks quality run --n 8"
    assert first["files"] == [f"benchmarks/results/quality/x.{s}" for s in ("json", "md")]
    first["backs"] = "README § somewhere"
    manifest.write_text(json.dumps([first]))
    common.record([a], script=script, argv=["--n", "16"])
    (again,) = json.loads(manifest.read_text())
    assert again["command"].endswith("--n 16") and again["backs"] == "README § somewhere"
    assert again["files"] == first["files"]  # the md it did not rewrite stays listed
    png = results / "quality" / "x.png"
    png.write_text("png")
    common.record([png], script=script, argv=[], extends=a)
    (joined,) = json.loads(manifest.read_text())
    assert joined["files"][-1].endswith("x.png") and joined["command"].endswith("--n 16")
    assert "### x" in (tmp_path / "docs" / "results.md").read_text()

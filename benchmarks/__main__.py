"""Every benchmark behind one command.

    python -m benchmarks list                       # suites and benchmarks, one line each
    python -m benchmarks <suite> <name> [options]   # run one (--help: its options)
    python -m benchmarks results                    # docs/results.md from the run manifests

A benchmark is a module ``benchmarks/<suite>/<name>.py`` with a ``main(argv)``; what it writes
under ``benchmarks/results/<suite>/`` it records in that folder's ``MANIFEST.json``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
from pathlib import Path

from benchmarks import common

HERE = Path(__file__).resolve().parent
PROG = "python -m benchmarks"


def summary(doc: str) -> str:
    """A docstring's first paragraph, as one line."""
    return " ".join(doc.strip().split("\n\n")[0].split())


def catalog() -> dict[str, dict[str, str]]:
    """suite -> name -> one-line description, read from the files (nothing is imported)."""
    out: dict[str, dict[str, str]] = {}
    for suite in sorted(p for p in HERE.iterdir() if (p / "__init__.py").is_file()):
        names = {}
        for path in sorted(suite.glob("[!_]*.py")):
            tree = ast.parse(path.read_text())
            if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
                names[path.stem] = summary(ast.get_docstring(tree) or "")
        if names:
            out[suite.name] = names
    return out


def listing(suites: dict[str, dict[str, str]]) -> str:
    width = max(len(name) for names in suites.values() for name in names)
    lines = []
    for suite, names in suites.items():
        lines.append(suite)
        lines += [f"  {name:<{width}}  {text}" for name, text in names.items()]
    return "\n".join(lines)


def results(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"{PROG} results", description="Write docs/results.md "
                                "from benchmarks/results/*/MANIFEST.json.")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="default: docs/results.md")
    p.add_argument("--check", action="store_true", help="exit 1 if the page is out of date")
    args = p.parse_args(argv)
    if args.check:
        out = args.out or common.PAGE
        fresh = out.exists() and out.read_text() == common.results_page()
        print(f"{common.shown(out)}: {'up to date' if fresh else 'out of date'}")
        return 0 if fresh else 1
    print(f"wrote {common.shown(common.write_results_page(args.out))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    suites = catalog()
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + listing(suites))
        return 0
    first, rest = argv[0], argv[1:]
    if first == "list":
        print(listing(suites))
        return 0
    if first == "results":
        return results(rest)
    if first not in suites:
        print(f"unknown suite {first!r}; suites: {', '.join(suites)}", file=sys.stderr)
        return 2
    if not rest or rest[0] in ("-h", "--help"):
        print(listing({first: suites[first]}))
        return 0
    name, args = rest[0], rest[1:]
    if name not in suites[first]:
        known = ", ".join(suites[first])
        print(f"unknown benchmark {first} {name!r}; {first} has: {known}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{first}.{name}")
    sys.argv = [f"{PROG} {first} {name}", *args]  # argparse's prog, and the recorded command
    code = module.main(args)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())

"""The package's shape, read from its imports: every module of ``winnow/`` stands in a layer, no
import cycle inside ``winnow/`` (imports inside functions and under ``TYPE_CHECKING`` included),
no import from a lower layer to a higher one, clients that reach the server over HTTP only, and
nothing loose at the package's top but the CLI and the settings.

The layers, from the ground up: the wire and the settings; kernels; heads on the policy's states;
answers; the engine seam (and the default model it builds); rewards; the meters; strategies;
training; the server; the clients; the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS: tuple[tuple[str, ...], ...] = (
    ("settings", "protocol"),
    ("kernels",),
    ("heads",),
    ("answers",),
    ("engine", "models"),
    ("rewards",),
    ("metering",),
    ("strategies",),
    ("train",),
    ("server",),
    ("clients",),
    ("cli", "__main__"),
)
SERVER_SIDE = ("kernels", "heads", "engine", "metering", "rewards", "strategies", "server")
TOP_LEVEL = {"winnow", "winnow.cli", "winnow.settings", "winnow.__main__"}


def modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "winnow").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports() -> dict[str, set[str]]:
    """Module -> the winnow modules it imports anywhere in its body."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package[: len(package) - (node.level - 1)]
                    base = ".".join([*parts, base] if base else parts)
                names = [f"{base}.{a.name}" for a in node.names]
            for name in names:
                target = resolve(name) if name.startswith("winnow") else None
                # a submodule importing its own package is implicit in Python
                if target and target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    return graph


def layer(module: str) -> int | None:
    for i, names in enumerate(LAYERS):
        for name in names:
            if module == f"winnow.{name}" or module.startswith(f"winnow.{name}."):
                return i
    return None


def test_no_import_cycle():
    graph = imports()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append([*path[path.index(t) :], t])
            elif t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == []


def test_no_import_from_a_lower_layer_to_a_higher_one():
    upward = [
        (m, t)
        for m, targets in imports().items()
        for t in targets
        if layer(m) is not None and layer(t) is not None and layer(t) > layer(m)  # type: ignore[operator]
    ]
    assert upward == []


def test_clients_reach_the_server_over_http_only():
    side = tuple(f"winnow.{name}" for name in SERVER_SIDE)
    reached = {
        (m, t)
        for m, targets in imports().items()
        if m.startswith("winnow.clients")
        for t in targets
        if t.startswith(side)
    }
    assert reached == set()


def test_the_check_sees_imports():
    """The graph is not empty: the server imports strategies, a strategy the engine seam."""
    graph = imports()
    assert "winnow.strategies.registry" in graph["winnow.server.serving"] or any(
        t.startswith("winnow.strategies") for t in graph["winnow.server.serving"]
    )
    assert "winnow.engine.base" in graph["winnow.strategies.parts.selection"]


def test_every_module_stands_in_a_layer():
    unplaced = sorted(m for m in modules() if m != "winnow" and layer(m) is None)
    assert unplaced == []


def test_nothing_loose_at_the_top_but_the_cli_and_the_settings():
    loose = {
        m for m, path in modules().items() if path.parent == ROOT / "winnow" and m not in TOP_LEVEL
    }
    assert loose == set()


def test_strategies_folder_holds_strategies():
    """Every module at the top of ``strategies/`` but the contract and the registry is a
    strategy (an ``async def`` registered by name); what they share lives in
    ``strategies/parts/``."""
    folder = ROOT / "winnow" / "strategies"
    not_strategies = []
    for path in folder.glob("*.py"):
        if path.stem in {"__init__", "base", "registry"}:
            continue
        tree = ast.parse(path.read_text())
        registered = [
            node
            for node in tree.body
            if isinstance(node, ast.AsyncFunctionDef)
            and any(
                isinstance(d, ast.Call) and getattr(d.func, "id", None) == "register"
                for d in node.decorator_list
            )
        ]
        if not registered:
            not_strategies.append(path.stem)
    assert not_strategies == []

"""The folders say what each part is, and the imports keep to it.

- ``streams.core`` is the functional core: it imports nothing of the shell;
- ``streams.runtime`` is a generic stream runtime: it knows no product wiring, web or tools;
- the worker's import path holds no developer tool (simulator, bench, evaluation);
- no import circle among the package's modules (module-level imports; imports inside functions
  and under ``TYPE_CHECKING`` are how a module says "not at import time").
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "streams"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p) for p in PKG.rglob("*.py")}


def top_level_imports(path: Path) -> set[str]:
    """Modules of ``streams`` imported at module level (not in functions, not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("streams"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("streams"):
                subs = {f"{node.module}.{a.name}" for a in node.names}
                found.update(subs)
                # ``from pkg import submodule`` depends on the submodule; like every import of a
                # submodule it runs the package's __init__ first, which the graph leaves implicit
                if not all(s in MODULES for s in subs):
                    found.add(node.module)
            elif isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(getattr(node, "orelse", []))

    visit(tree.body)
    return found


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    return {name: {m for m in top_level_imports(p) if m in mods and m != name} for name, p in mods.items()}


def test_the_core_imports_nothing_of_the_shell() -> None:
    bad = {m: deps for m, deps in graph().items() if m.startswith("streams.core")
           for deps in [{d for d in deps if not d.startswith("streams.core")}] if deps}
    assert not bad, bad


def test_the_runtime_knows_no_product_wiring_web_or_tools() -> None:
    forbidden = ("streams.app", "streams.web", "streams.devtools", "streams.cli", "streams.clickhouse")
    bad = {m: deps for m, deps in graph().items() if m.startswith("streams.runtime")
           for deps in [{d for d in deps if d.startswith(forbidden)}] if deps}
    assert not bad, bad


def test_no_import_circles() -> None:
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for name in sorted(g):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_the_worker_import_path_holds_no_developer_tool() -> None:
    code = ("import sys, streams.app.worker, streams.web.server, streams.cli\n"
            "print(sorted(m for m in sys.modules if m.startswith('streams.devtools')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout

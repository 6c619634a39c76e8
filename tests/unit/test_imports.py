"""The module graph has no import cycles, lazy imports included, and the daemon loads no tool code."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import oxsd

PKG = Path(oxsd.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(mod: str, is_pkg: bool, node: ast.AST, known: set[str]) -> set[str]:
    """The oxsd modules an import statement names (`from .x import y` names x and, if a module, x.y)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names} & known
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = mod.split(".")
        base = base[:len(base) - node.level + (1 if is_pkg else 0)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return ({prefix} | {f"{prefix}.{a.name}" for a in node.names}) & known


def import_graph() -> dict[str, set[str]]:
    """Every import statement, at module level or inside a function (so a lazy import cannot hide
    a cycle); a submodule's implicit import of its package's __init__ is not an edge."""
    paths = {_module_name(p): p for p in PKG.rglob("*.py")}
    known = set(paths)
    graph: dict[str, set[str]] = {}
    for mod, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps |= _imported(mod, path.name == "__init__.py", node, known)
        graph[mod] = deps - {mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    # xenstored imports the backend chooser inside open_hypervisor
    assert "oxsd.backend" in graph["oxsd.xenstored"]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_each_backend_depends_on_the_interface_not_on_the_other():
    graph = import_graph()
    assert "oxsd.hypervisor" in graph["oxsd.xenctrl"] and "oxsd.hypervisor" in graph["oxsd.sim.hv"]
    assert not graph["oxsd.xenctrl"] & {"oxsd.sim", "oxsd.sim.hv"}
    assert "oxsd.xenctrl" not in graph["oxsd.sim.hv"]
    assert not graph["oxsd.hypervisor"] & {"oxsd.xenctrl", "oxsd.sim.hv", "oxsd.backend"}


def test_the_daemon_loads_no_diff_tool_and_logging_no_store():
    code = ("import sys, oxsd.trace, oxsd.logging_, oxsd.utils, oxsd.stdext; "
            "print(sorted(m for m in sys.modules if m.startswith(('oxsd.diff', 'oxsd.disk', 'oxsd.store'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PKG.parent).stdout
    assert out.strip() == "[]"

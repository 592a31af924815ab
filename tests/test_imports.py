"""The library's import structure: no circles, and an analysis layer that needs no model code.

The graph is read from the source with `ast` (module-level and function-level imports both,
relative imports resolved), not by importing, so a lazy import inside a function counts too.
"""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ANALYSIS = ("moelab.routing_trace", "moelab.store", "moelab.metrics", "moelab.plots", "moelab.compute")
MODEL_OR_TOOLING = ("moelab.tools", "moelab.train", "moelab.model_card", "moelab.notebooks", "moelab.cli",
                    "moelab.models", "moelab.tracer", "moelab.hooks", "moelab.adapters", "moelab.engines",
                    "moelab.interventions", "moelab.bench", "moelab.corpus", "moelab.data")


def modules(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """{dotted name: (file, is a package)} of every module under moelab/."""
    out = {}
    for f in sorted((root / "moelab").rglob("*.py")):
        parts = list(f.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{module: moelab modules it imports anywhere in its source}; `from pkg import sub` points at pkg.sub."""
    mods = modules(root)
    graph = {}
    for name, (f, is_pkg) in mods.items():
        here = name.split(".") if is_pkg else name.split(".")[:-1]   # the package a relative import starts from
        edges = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                src = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:            # `moelab.metrics.balance.x` -> the module that holds it
                    t = t.rpartition(".")[0]
                if t and t != name:
                    edges.add(t)
        graph[name] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[frozenset]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_circle_finder_finds_a_function_level_circle(tmp_path):
    pkg = tmp_path / "moelab"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "c.py").write_text("from moelab import a\n")
    assert circles(import_graph(tmp_path)) == [frozenset({"moelab.a", "moelab.b"})]


def test_no_import_circles_among_moelab_modules():
    found = [sorted(c) for c in circles(import_graph())]
    assert found == [], f"import circles: {found}"


def test_the_analysis_layer_never_reaches_model_or_tooling_code_even_lazily():
    graph, seen, todo = import_graph(), set(), list(ANALYSIS)
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    assert sorted(m for m in seen if m.startswith(MODEL_OR_TOOLING)) == []


@pytest.mark.slow
def test_the_analysis_layer_imports_with_transformers_blocked():
    code = textwrap.dedent(f"""
        import importlib, sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "transformers" or name.startswith("transformers."):
                    raise ImportError("transformers is blocked in this test")

        sys.meta_path.insert(0, Block())
        for m in {ANALYSIS!r}:
            importlib.import_module(m)
        import moelab
        moelab.metrics, moelab.plots, moelab.compute          # the lazy attributes resolve too
        bad = sorted(m for m in sys.modules if m == "transformers" or m.startswith({MODEL_OR_TOOLING!r}))
        print("LOADED", bad)
        """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "LOADED []" in res.stdout, res.stdout

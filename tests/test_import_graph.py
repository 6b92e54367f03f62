"""The import graph of the atfr package: no cycles, and the pipeline never reaches TensorRT.

The graph is read from the sources with ast (every ``import``/``from ... import``, also those inside
functions: a lazy import still ties two modules together). Backends reached through the string
registry in atfr.runtime.backends are, by design, not edges.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import pytest

    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def _package_dirs() -> dict[str, Path]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {pkg: ROOT / d for pkg, d in cfg["package-dir"].items()}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg, d in _package_dirs().items():
        for f in d.rglob("*.py"):
            rel = f.relative_to(d).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([pkg, *parts])] = f
    return mods


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                mod = ".".join(anchor + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in known:  # 'atfr.runtime.tensorrt.compat.BuildOptions' -> the module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    g = {n: _imports(n, p, known) for n, p in mods.items()}
    # Importing a submodule imports its parent packages first; those edges are not cycles.
    return {n: {t for t in ts if not n.startswith(t + ".")} for n, ts in g.items()}


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_graph_sees_the_tensorrt_package():
    g = _graph()
    # the walk is not vacuous: it resolves relative imports inside the new package
    assert {"atfr.runtime.tensorrt.compat", "atfr.runtime.tensorrt.cuda", "atfr.runtime.tensorrt.plugin",
            "atfr.runtime.pipeline"} <= g["atfr.runtime.tensorrt.backend"]
    assert "atfr.runtime.tensorrt.compat" in g["atfr.commands.build"]


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_runtime_import_graph_has_no_cycles():
    g = _graph()
    runtime = {n: {t for t in ts if t.startswith("atfr.runtime")}
               for n, ts in g.items() if n.startswith("atfr.runtime")}
    assert _cycles(runtime) == []


def test_pipeline_does_not_reach_tensorrt_statically():
    g = _graph()
    seen, todo = set(), ["atfr.runtime.pipeline"]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo.extend(g.get(n, ()))
    assert not [n for n in seen if n.startswith("atfr.runtime.tensorrt")]


def test_video_imports_nothing_else_of_the_runtime():
    """runtime/video/ (frames in and out) is a leaf: the core and serving build on it, not around it."""
    g = _graph()
    video = {n for n in g if n.startswith("atfr.runtime.video.")}
    assert {"atfr.runtime.video.sources", "atfr.runtime.video.preprocess", "atfr.runtime.video.camera"} <= video
    outside = {n: sorted(t for t in g[n] if t.startswith("atfr.runtime") and not t.startswith("atfr.runtime.video"))
               for n in video}
    assert not {n: ts for n, ts in outside.items() if ts}


def test_only_serving_imports_serving():
    """Nothing in the runtime depends on runtime/serving/ (the Triton side), so the core and a second
    model family's runner stay usable without it."""
    g = _graph()
    serving = {n for n in g if n.startswith("atfr.runtime.serving.")}
    assert {"atfr.runtime.serving.service", "atfr.runtime.serving.triton_models"} <= serving
    users = sorted(n for n, ts in g.items() if n.startswith("atfr.runtime") and not n.startswith("atfr.runtime.serving")
                   and any(t.startswith("atfr.runtime.serving") for t in ts))
    assert users == []
    # the walk sees the package's own edges (not vacuous)
    assert "atfr.runtime.serving.service" in g["atfr.runtime.serving.triton_models"]


def test_importing_pipeline_does_not_import_the_tensorrt_package():
    code = ("import sys, atfr.runtime.pipeline, atfr.runtime.backends; "
            "bad = sorted(m for m in sys.modules if m.startswith('atfr.runtime.tensorrt') or m == 'tensorrt' "
            "or m.startswith('cuda')); assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr

"""The layout holds: no import cycles, layers only import downwards, no hidden imports, small modules.

Run alone with ``.venv/bin/python -m pytest -q tests/test_architecture.py`` (README, "Code layout"); it
reads the source with ``ast`` and imports nothing, so it takes a second. docs/ARCHITECTURE.md draws
the layers these tests hold the code to.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "crossrec_core"

# Lowest first: a module may import from its own layer and the layers before it, never from a later one.
LAYERS = ("data", "models", "storage", "serving", "evaluation", "training", "cli")
# Modules every layer may use: errors, settings, devices, text safety, compiled kernels, and the workspace paths.
FOUNDATION = {"crossrec_core", "crossrec_core.errors", "crossrec_core.config", "crossrec_core.device",
              "crossrec_core.safe_text", "crossrec_core.kernels", "crossrec_core.storage.workspace"}
ENTRY_POINTS = {"crossrec_core.__main__": "cli"}  # `python -m crossrec_core` is the CLI
# Imports allowed inside functions: slow optional imports, each with a reason on its line.
LAZY_OK = ("umap", "transformers", "numba", "opacus")  # slow to import (numba compiles on import; opacus ~1.5 s)
MAX_MODULE_LINES = 400  # past this a module says why it is one ("Why one module" in its docstring)
MAX_PAGE_LINES = 100


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def core_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def _resolve(mod: str, node: ast.ImportFrom | ast.Import, known: set[str]) -> list[str]:
    """Return the crossrec_core modules an import statement loads (``from pkg import mod`` counts mod)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "crossrec_core"]
    base = node.module or ""
    if node.level:  # relative import
        pkg = mod.split(".")[: -node.level] if not mod.endswith("__init__") else mod.split(".")
        base = ".".join(pkg + ([node.module] if node.module else []))
    if not base.startswith("crossrec_core"):
        return []
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append(sub if sub in known else base)
    return out


def import_graph(lazy: bool = False) -> dict[str, set[str]]:
    """Return {module: crossrec_core modules it imports}: at module level, or (lazy=True) inside functions."""
    mods = core_modules()
    known = set(mods)
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        deps: set[str] = set()
        for node in _imports(tree, in_function=False, want_lazy=lazy):
            deps.update(d for d in _resolve(mod, node, known) if d != mod)
        graph[mod] = deps
    return graph


def _imports(tree: ast.AST, in_function: bool, want_lazy: bool):
    for node in ast.iter_child_nodes(tree):
        inside = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if inside == want_lazy:
                yield node
        else:
            yield from _imports(node, inside, want_lazy)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
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
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer_of(mod: str) -> int | None:
    if mod in FOUNDATION:
        return None
    if mod in ENTRY_POINTS:
        return LAYERS.index(ENTRY_POINTS[mod])
    parts = mod.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_no_import_cycles():
    graph = import_graph()
    assert graph, "no modules found"
    assert cycles(graph) == []


def test_cycle_finder_finds_a_planted_cycle():
    """The check can fail: a two-module and a three-module loop are both reported."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert sorted(cycles(graph)) == [["a", "b"], ["c", "d", "e"]]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Return "a (layer) -> b (layer)" for every import of a later layer (foundation imports nothing above it)."""
    bad = []
    for mod, deps in graph.items():
        mine = layer_of(mod)
        for d in deps:
            theirs = layer_of(d)
            if mod in FOUNDATION and d not in FOUNDATION:
                bad.append(f"{mod} (foundation) -> {d}")
            elif mine is not None and theirs is not None and theirs > mine:
                bad.append(f"{mod} ({LAYERS[mine]}) -> {d} ({LAYERS[theirs]})")
    return sorted(bad)


def test_layers_only_import_downwards():
    bad = upward_imports(import_graph())
    assert bad == [], "upward imports:\n" + "\n".join(bad)


def test_layer_check_can_fail():
    graph = {"crossrec_core.data.load": {"crossrec_core.serving.recommender", "crossrec_core.errors"},
             "crossrec_core.errors": {"crossrec_core.models.trained"}, "crossrec_core.cli.model": {"crossrec_core.training.loop"}}
    assert upward_imports(graph) == ["crossrec_core.data.load (data) -> crossrec_core.serving.recommender (serving)",
                                     "crossrec_core.errors (foundation) -> crossrec_core.models.trained"]


def test_every_core_module_is_in_a_layer_or_the_foundation():
    stray = [m for m in core_modules() if layer_of(m) is None and m not in FOUNDATION]
    assert stray == []


def _function_imports(path: Path) -> list[tuple[int, str]]:
    src = path.read_text(encoding="utf-8")
    lines = src.splitlines()
    out = []
    for node in _imports(ast.parse(src), in_function=False, want_lazy=True):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        line = lines[node.lineno - 1]
        if not (any(n.split(".")[0] in LAZY_OK for n in names) and "#" in line):
            out.append((node.lineno, line.strip()))
    return out


def test_no_function_level_imports_except_slow_optional_ones_with_a_reason():
    files = sorted(CORE.rglob("*.py")) + sorted((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]
    bad = [f"{p.relative_to(ROOT)}:{n}: {line}" for p in files for n, line in _function_imports(p)]
    assert bad == [], "imports inside functions (move them to the top, or give a slow optional import a reason):\n" + "\n".join(bad)


def test_function_import_check_can_fail(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("def f():\n    import json\n    import umap  # slow: numba\n    import transformers\n")
    assert [n for n, _ in _function_imports(p)] == [2, 4]


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_modules_are_small_or_say_why(path):
    src = path.read_text(encoding="utf-8")
    n = len(src.splitlines())
    doc = ast.get_docstring(ast.parse(src)) or ""
    assert n <= MAX_MODULE_LINES or "Why one module" in doc, f"{n} lines and no 'Why one module' note in the docstring"


def test_pages_are_short():
    long = {p.name: n for p in sorted((ROOT / "pages").glob("*.py")) if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_PAGE_LINES}
    assert long == {}


def routed_page_files() -> list[Path]:
    """The page files app.py's st.navigation routes to (st.Page("pages/x.py", ...))."""
    tree = ast.parse((ROOT / "app.py").read_text())
    return [ROOT / node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Page"
            and node.args and isinstance(node.args[0], ast.Constant)]


def test_every_routed_page_imports_the_pages_package_first():
    """On a fresh server a page's address runs its file without app.py: importing ``pages`` reroutes the run.
    Done first, the studio replaces Streamlit's bare file list at once; after torch's import it showed for seconds
    (bench/first_visit.py)."""
    files = routed_page_files()
    assert len(files) == 7
    for path in files:
        first = next(n for n in ast.parse(path.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom)))
        assert isinstance(first, ast.Import) and [a.name for a in first.names] == ["pages"], f"{path.name}: first import is not `import pages`"

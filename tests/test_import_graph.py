"""The house rules of DESIGN.md section 3, checked on the source: no import cycles, export never reaches into
the runtime, and the torch-free rooms reach no torch at import time.

The graph is read with ``ast`` (nothing is imported), so a function-level import counts as an edge just
like a top-level one: a cycle hidden inside a function is still a cycle of responsibilities.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stablemtl_edge"
TORCH_FREE = ("stablemtl_edge.runtime", "stablemtl_edge.artifact", "stablemtl_edge.data", "stablemtl_edge.eval",
              "stablemtl_edge.cli", "stablemtl_edge.tasks", "stablemtl_edge.records")
TORCH_LIBS = ("torch", "diffusers", "transformers", "accelerate", "safetensors.torch")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The package module an imported dotted name lands in (a name may be a function inside a module)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> list[tuple[str, bool]]:
    """(imported dotted name, at module top level) for every run-time import statement of ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` / try-blocks at top level are still top level
        if isinstance(node, (ast.If, ast.Try)):
            top_level.update(id(n) for n in ast.walk(node))
    typing_only = {id(inner) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for inner in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: no import happens at run time
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.append((origin, id(node) in top_level))
            found += [(f"{origin}.{alias.name}", id(node) in top_level) for alias in node.names]
    return found


GRAPH: dict[str, set[str]] = {}
TOP: dict[str, set[str]] = {}
EXTERNAL_TOP: dict[str, set[str]] = {}
for _m in MODULES:
    GRAPH[_m], TOP[_m], EXTERNAL_TOP[_m] = set(), set(), set()
    for _name, _top in _imports(_m):
        target = _resolve(_name)
        if target is None:
            if _top:
                EXTERNAL_TOP[_m].add(_name)
            continue
        # importing a submodule runs its package's __init__ too; `from . import x` names the package itself
        if target != _m and not _m.startswith(target + "."):
            GRAPH[_m].add(target)
            if _top:
                TOP[_m].add(target)


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def _reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        for n in edges[m]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def test_the_graph_was_read():
    assert len(MODULES) > 100
    assert "stablemtl_edge.artifact.manifest" in GRAPH["stablemtl_edge.runtime.api"]


def test_no_import_cycles():
    cycles = _cycles()
    assert not cycles, "import cycles (function-level imports included): " + "; ".join(" <-> ".join(c) for c in cycles)


def test_export_never_imports_the_runtime():
    offenders = sorted(
        f"{m} -> {t}" for m in GRAPH if m.startswith("stablemtl_edge.export")
        for t in GRAPH[m] if t.startswith("stablemtl_edge.runtime"))
    assert not offenders, "export/ must speak to the runtime only through artifact/: " + ", ".join(offenders)


def test_export_never_reaches_the_runtime_through_top_level_imports():
    reached = sorted({t for m in GRAPH if m.startswith("stablemtl_edge.export")
                      for t in _reachable(m, TOP) if t.startswith("stablemtl_edge.runtime")})
    assert not reached, "export/ reaches runtime/ through top-level imports: " + ", ".join(reached)


def test_the_runtime_never_imports_the_stages_that_make_artifacts():
    """The runtime reads artifacts; export, calibration and training write them (function-level imports count)."""
    later = ("stablemtl_edge.export", "stablemtl_edge.calibration", "stablemtl_edge.training", "stablemtl_edge.model")
    offenders = sorted(f"{m} -> {t}" for m in GRAPH if m.startswith("stablemtl_edge.runtime")
                       for t in GRAPH[m] if t.startswith(later))
    assert not offenders, "runtime/ must not import the stages that make artifacts: " + ", ".join(offenders)


@pytest.mark.parametrize("room", TORCH_FREE)
def test_torch_free_rooms_reach_no_torch_at_import(room):
    rooms = [m for m in MODULES if m == room or m.startswith(room + ".")]
    bad = []
    for m in rooms:
        for n in {m} | _reachable(m, TOP):
            bad += [f"{m} (via {n}) imports {e}" for e in EXTERNAL_TOP[n]
                    if e == "torch" or e.startswith(tuple(f"{lib}." for lib in TORCH_LIBS)) or e in TORCH_LIBS]
    assert not bad, "\n".join(sorted(set(bad)))

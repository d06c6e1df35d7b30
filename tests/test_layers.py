"""The house rules, checked on the source: imports point down the layers (groundtruth, games, toymodels,
analysis), no module imports another package's private module, and no modules import each other, not
even lazily inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("groundtruth", "games", "toymodels", "analysis")  # each may import only the ones before it


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Modules ``path`` imports at run time, at the top or inside functions (``if TYPE_CHECKING:``
    blocks are not run, so they are left out)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


SOURCES = sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py"))
OURS = {module_name(p) for p in SOURCES}


def test_the_source_tree_is_found():
    assert {"groundtruth.hmm", "toymodels.sae.registry", "analysis.metrics.recovery", "games.othello"} <= OURS


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_point_down_and_skip_private_modules(path):
    me = module_name(path)
    layer = LAYERS.index(me.split(".")[0])
    for target in imports(path):
        top = target.split(".")[0]
        if top in LAYERS:
            assert LAYERS.index(top) <= layer, f"{me} imports {target}, a layer above it"
            private = [part for part in target.split(".")[1:] if part.startswith("_") and part != "__init__"]
            if private and top != me.split(".")[0]:
                raise AssertionError(f"{me} imports {target}, another package's private module")


def test_no_import_cycles_between_modules():
    graph = {}
    for path in SOURCES:
        me = module_name(path)
        targets = {t for t in imports(path) if t in OURS and t != me}
        graph[me] = {t for t in targets if not me.startswith(t + ".")}  # a package's own __init__ is not a cycle
    state: dict[str, int] = {}

    def walk(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                walk(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])

"""The packages depend on each other one way: targets <- calibration <- profiles <- compiler.

Walked with `ast` over every module, imports inside functions included (they run too); imports only for
type checking (``if TYPE_CHECKING:``) are left out, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("targets", "calibration", "profiles", "compiler")
#: what each package may import, besides itself: a strict order, bottom first
ALLOWED = {"targets": set(), "calibration": {"targets"}, "profiles": {"targets", "calibration"},
           "compiler": {"targets", "calibration", "profiles"}}


def _runtime_imports(tree: ast.AST) -> list[tuple[int, str]]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for body in node.body for n in ast.walk(body)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
    return found


def edges() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            for line, module in _runtime_imports(ast.parse(file.read_text(), str(file))):
                top = module.split(".")[0]
                if top in PACKAGES and top != package:
                    found.setdefault((package, top), []).append(f"{file.relative_to(ROOT)}:{line} imports {module}")
    return found


def test_no_package_imports_one_above_it():
    wrong = {edge: where for edge, where in edges().items() if edge[1] not in ALLOWED[edge[0]]}
    assert not wrong, "\n".join(line for where in wrong.values() for line in where)


def test_the_package_graph_has_no_cycle():
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for a, b in edges():
        graph[a].add(b)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join(path + [node, nxt])}"
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for package in PACKAGES:
        if package not in state:
            visit(package, [])


def test_the_bottom_layer_imports_no_other_chipfit_package():
    assert not [edge for edge in edges() if edge[0] == "targets"]

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


# --- modules ---------------------------------------------------------------------------------------------------

def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            parts = file.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return found


MODULES = _modules()


def _module_imports(name: str) -> list[tuple[int, str, str | None]]:
    """Every import of module ``name`` (lazy and type-checking ones too): (line, chipfit module, name taken)."""
    file = MODULES[name]
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            pairs = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            pairs = [(f"{base}.{a.name}", None) if f"{base}.{a.name}" in MODULES else (base, a.name)
                     for a in node.names]
        else:
            continue
        for module, taken in pairs:
            while module and module not in MODULES:
                module = module.rpartition(".")[0]
            if module and module != name:
                found.append((node.lineno, module, taken))
    return found


def test_no_module_import_cycle():
    graph = {name: {m for _, m, _ in _module_imports(name)} for name in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in MODULES:
        if name not in index:
            connect(name)
    assert not cycles, "modules importing each other: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_private_name_is_imported_across_modules():
    wrong = [f"{MODULES[name].relative_to(ROOT)}:{line} imports {module}.{taken}"
             for name in MODULES for line, module, taken in _module_imports(name)
             if taken and taken.startswith("_") and not taken.startswith("__")]
    assert not wrong, "\n".join(wrong)


def test_targets_imports_nothing_of_compiler_not_even_for_type_checking():
    wrong = [f"{MODULES[name].relative_to(ROOT)}:{line} imports {module}"
             for name in MODULES if name.startswith("targets")
             for line, module, _ in _module_imports(name) if not module.startswith("targets")]
    assert not wrong, "\n".join(wrong)


def _builtin_backends() -> dict[str, str]:
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["chipfit.backends"]
    return {name: value.split(":")[0] for name, value in declared.items()}


#: the toolchain libraries only a backend's own folder may import
BACKEND_LIBRARIES = ("tvm", "coremltools", "executorch", "openvino", "nncf", "onnxruntime_genai")


def test_no_builtin_backend_is_named_outside_its_folder():
    """Core code asks a backend what it can do: it imports no backend's module or toolchain library and compares
    no name with a built-in backend's."""
    backends = _builtin_backends()
    wrong = []
    for name, file in MODULES.items():
        if name.startswith("compiler.backends."):
            continue
        where = file.relative_to(ROOT)
        wrong += [f"{where}:{line} imports {module}" for line, module, _ in _module_imports(name)
                  if any(module == m or module.startswith(m + ".") for m in backends.values())]
        tree = ast.parse(file.read_text(), str(file))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                wrong += [f"{where}:{node.lineno} imports {m}" for m in modules
                          if not getattr(node, "level", 0) and m.split(".")[0] in BACKEND_LIBRARIES]
            if isinstance(node, ast.Compare):
                for operand in [node.left, *node.comparators]:
                    values = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                    wrong += [f"{where}:{node.lineno} compares with backend name {v.value!r}" for v in values
                              if isinstance(v, ast.Constant) and v.value in backends]
    assert not wrong, "\n".join(wrong)

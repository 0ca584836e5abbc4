"""The import graph of `python/metrics/` has no circle, as `src/lib.rs`'s `layering` test keeps the crate's.

Every import counts: at module level, inside a function (a lazy import is still a dependency,
and a circle of lazy imports is still a circle to the reader), under `if TYPE_CHECKING:`, and
`importlib.import_module("metrics....")` with a literal name. A package's `__init__` is a node
of its own; importing a submodule is an edge to that submodule only (the parent package runs
first, but depending on `metrics.instrument.db` is not depending on what
`metrics/instrument/__init__.py` imports).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "python"
PACKAGE = "metrics"

Graph = dict[str, set[str]]


def module_files() -> dict[str, Path]:
    """Return every module of the package by dotted name (a package by its own name).

    The compiled core (`metrics._core`) is read from its stub, so that importing it is an edge to
    it and not to the package.
    """
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py*")):
        if path.suffix not in {".py", ".pyi"} or (path.suffix == ".pyi" and path.with_suffix(".py").exists()):
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """Return the module of ours `name` is or lives in (`metrics.core.tick` -> `metrics.core`)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Return the modules of ours that `module` imports anywhere in its source."""
    is_package = path.stem == "__init__"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            # `from metrics import core`: the submodule when there is one, else the package.
            names = [f"{base}.{alias.name}" for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        for name in names:
            target = resolve(name, modules)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph() -> Graph:
    """Return, for every module of the package, the modules of ours it imports."""
    modules = module_files()
    return {module: imported(module, path, modules) for module, path in modules.items()}


def circles(graph: Graph) -> list[list[str]]:
    """Return the strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_graph_is_read_from_the_source() -> None:
    """The reader sees module-level, lazy, relative and import_module() imports."""
    graph = import_graph()
    assert "metrics.core" in graph["metrics"]  # module level, in a package's __init__
    assert "metrics._core" in graph["metrics.core"]  # the compiled core, read from its stub
    assert "metrics.instrument.celery_queues" in graph["metrics.instrument.celery"]  # in a function
    assert "metrics.instrument" in graph["metrics.apps"]  # importlib.import_module("metrics.instrument")
    assert "metrics.worker_http" in graph["metrics.celery_worker"]  # under TYPE_CHECKING and lazily


def test_circles_are_found() -> None:
    """A two-module circle and a longer one are reported; a diamond is not a circle."""
    assert circles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert circles({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) == []


def test_no_import_circles_in_the_package() -> None:
    """Each module of `metrics` depends one way: no set of modules imports itself round."""
    assert circles(import_graph()) == []

"""The layering: pages -> dashboard -> core, never back; no Streamlit under core; no import cycle among
core's modules. Imports are read with ``ast``, so one inside a function or under TYPE_CHECKING counts."""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("core", "dashboard", "pages")  # each may import only the ones before it


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str) -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((PROJECT_ROOT / package).rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Every module ``path`` imports, at any depth of the file; ``from a import b`` names ``a.b``
    when that is a module, else ``a``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


def test_layers_import_only_downwards() -> None:
    wrong = []
    for rank, layer in enumerate(LAYERS):
        allowed_above = set(LAYERS[rank + 1 :])
        modules = _modules(layer)
        for name, path in modules.items():
            for imported in _imports(path, set(modules)):
                if _top(imported) in allowed_above:
                    wrong.append(f"{name} imports {imported}")
    assert not wrong, "; ".join(wrong)


def test_no_streamlit_under_core() -> None:
    modules = _modules("core")
    users = [
        name
        for name, path in modules.items()
        if any(_top(imported) == "streamlit" for imported in _imports(path, set(modules)))
    ]
    assert not users, f"core imports streamlit: {', '.join(users)}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that starts and ends on the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for successor in sorted(graph[node]):
            if state.get(successor) == 1:
                return [*path[path.index(successor) :], successor]
            if successor not in state and (found := visit(successor)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def _core_graph() -> dict[str, set[str]]:
    """Module -> the core modules it imports; a package's ``__init__`` (which imports nothing) is not an edge."""
    modules = _modules("core")
    known = set(modules)
    return {
        name: {imported for imported in _imports(path, known) if imported in known and imported != name}
        for name, path in modules.items()
    }


def test_no_import_cycle_in_core() -> None:
    cycle = _cycle(_core_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_reports_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None

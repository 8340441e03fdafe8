"""The shape the code keeps (issue #21): modules small enough to have one job, functions short
enough to read at once. A module or function that outgrows these is due a split. And its seams
(issue #37): no import cycle, nothing installed that imports the uninstalled tasks/, no script
that edits ``sys.path``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def sources() -> list[Path]:
    return sorted(p for folder in ("src", "tasks") for p in (ROOT / folder).rglob("*.py"))


def test_no_module_is_over_500_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in sources()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_over_80_lines():
    long = {}
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.name}"] = lines
    assert long == {}


# --- seams ---------------------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT / "src").with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``source`` (a module of ``package``) imports when it
    runs: at module level or in a function (an import moved into a function still depends on
    its module, and hides a cycle that way), but not under ``if TYPE_CHECKING:``, which never
    runs."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for orelse in child.orelse:
                    visit(orelse)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*parent, *filter(None, [child.module])])
                for alias in child.names:  # ``from package import module`` imports the module
                    name = f"{base}.{alias.name}"
                    found.add(name if name in modules else base)
            visit(child)

    visit(ast.parse(source))
    return found & modules


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in (ROOT / "src").rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = imported_modules(path.read_text(), package, set(paths)) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_import_cycle_under_src():
    assert cycles(import_graph()) == []


def test_the_import_graph_sees_imports_in_functions_not_for_type_checking():
    source = """
from typing import TYPE_CHECKING
from . import b
if TYPE_CHECKING:
    from p.c import C
def f():
    from p.d import g
"""
    assert imported_modules(source, "p", {"p.a", "p.b", "p.c", "p.d"}) == {"p.b", "p.d"}
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_installed_module_imports_the_tasks_package():
    """src/ is what is installed; tasks/ is not. A run's task is the class its config names
    (``task._target_``), which Hydra imports from the repository root; src/ never names it."""
    naming = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "src").rglob("*.py")
        if any(name.split(".")[0] == "tasks" for name in imported_names(path.read_text()))
    ]
    assert naming == []


def imported_names(source: str) -> set[str]:
    """Every module an import statement of ``source`` names, wherever it stands."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module or "")
    return names


def test_no_script_edits_sys_path():
    """Scripts run as ``python -m scripts.<name>`` from the repository root (and run.py from
    it), where scripts/ and tasks/ import as packages."""
    editing = [
        str(path.relative_to(ROOT))
        for path in [ROOT / "run.py", *sorted((ROOT / "scripts").glob("*.py"))]
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and ast.unparse(node) == "sys.path"
    ]
    assert editing == []

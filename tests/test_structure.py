"""The shape of the house, read from the source: no import circles among the project's modules
(counting imports inside functions and modules reached by a ``"package.module:function"`` string or
by a literal handed to ``import_module``), and no module over 700 lines.

Pure ``ast``: nothing is imported, so the test needs no settings and cannot be fooled by import order.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("recognition", "workers", "models", "accentsite", "bench")
MAX_LINES = 700
#: calls that import the module named by their first (literal) argument
IMPORTERS = {"import_module", "symbol_by_name", "import_string", "__import__"}
#: "package.module:attribute", the house's way to name code in plain data (registries)
DOTTED = re.compile(r"^(" + "|".join(PACKAGES) + r")(\.\w+)*:\w+$")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest project module that ``name`` (``a.b.c`` or ``a.b:c``) starts with."""
    parts = name.replace(":", ".").split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _edges(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            node.body = [ast.Pass()]  # annotations only: never imported at run time
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]  # "from pkg import submodule"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED.match(node.value):
            names.append(node.value)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in IMPORTERS and isinstance(node.args[0].value, str):
                names.append(node.args[0].value)
    out = {_resolve(n, modules) for n in names}
    out.discard(None)
    out.discard(module)
    # importing a.b.c runs a/__init__ and a/b/__init__ first: a package's own submodules are not a
    # circle through it, so an edge into a parent package of this module is left out
    return {m for m in out if not module.startswith(m + ".")}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _edges(name, path, modules) for name, path in modules.items()}


def test_the_scan_sees_imports_inside_functions_and_registry_strings() -> None:
    """The scan is not blind: edges the project is known to have are found (a lazy import inside a
    function; a family builder named by a ``module:function`` string in the registry)."""
    graph = _graph()
    assert "recognition.jobkinds" in graph and len(graph) > 100
    assert "workers.pipeline.whisper_lang" in graph["recognition.jobkinds"]  # imported inside _check_whisper
    assert "models.cnn" in graph["models.registry"]  # "models.cnn:build_cnn"
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles_among_project_modules() -> None:
    cycles = _cycles(_graph())
    assert cycles == [], f"import circles (each a set of modules that reach each other): {cycles}"


def test_no_project_module_is_over_700_lines() -> None:
    long = {str(path.relative_to(ROOT)): n for path in _modules().values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"

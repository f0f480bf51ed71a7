"""The package layering of DESIGN.md, checked on the import statements themselves.

Every module of the packages is parsed with `ast` (nothing is imported), so a
function-local import counts as much as a module-level one: it runs too, only later.
Arrows point down the table ir → passes → export / runtime, ir → frontends, and the app
(darkslim, with darkslim.testing) on top; tests and benchmarks are never imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("ir", "passes", "export", "runtime", "frontends")
PACKAGES = (*LIBRARY, "darkslim")

# package -> the packages of ours it must not import (anywhere in any of its modules)
FORBIDDEN = {
    "ir": {"passes", "runtime", "frontends", "export", "darkslim"},
    "passes": {"runtime", "frontends", "export", "darkslim"},
    "export": {"runtime", "frontends", "darkslim"},
    "runtime": {"frontends", "darkslim"},
    "frontends": {"passes", "runtime", "export", "darkslim"},
    "darkslim": set(),
}
NEVER = {"tests", "benchmarks"}  # imported by no module of any package


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, tree: ast.Module, *, functions: bool, type_checking: bool = False
             ) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` of each import in ``tree``: those that run at import
    time (module level, in if/try/with blocks and class bodies), with ``functions`` those
    in function bodies too, with ``type_checking`` those under ``if TYPE_CHECKING:``."""
    def names(node: ast.Import | ast.ImportFrom) -> Iterator[str]:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
            return
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            package = module if MODULES[module].name == "__init__.py" \
                else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        for alias in node.names:
            # `from passes import tree` imports the module passes.tree; `from ir import
            # Graph` imports ir itself.
            sub = f"{base}.{alias.name}"
            yield sub if sub in MODULES else base

    def walk(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) \
                and not functions:
            return
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_checking:
            for child in node.orelse:
                yield from walk(child)
            return
        for child in ast.iter_child_nodes(node):
            yield from walk(child)

    for node in walk(tree):
        for name in names(node):
            yield name, node.lineno


def _all_imports(*, functions: bool, type_checking: bool = False
                 ) -> dict[str, list[tuple[str, int]]]:
    return {module: list(_imports(module, ast.parse(path.read_text(), str(path)),
                                  functions=functions, type_checking=type_checking))
            for module, path in MODULES.items()}


EVERY_IMPORT = _all_imports(functions=True, type_checking=True)


def _package(module: str) -> str:
    return module.partition(".")[0]


def test_the_packages_are_found():
    assert {"ir.layers", "passes.registry", "export.driver", "runtime.model",
            "frontends.darknet", "darkslim.testing.strategies"} <= set(MODULES)


def test_function_local_imports_are_seen():
    tree = ast.parse("def f():\n    from passes import text\n    import runtime.model\n"
                     "if TYPE_CHECKING:\n    import export\nelse:\n    import ir\n")
    assert {m for m, _ in _imports("darkslim.cli", tree, functions=True)} \
        == {"passes.text", "runtime.model", "ir"}
    assert {m for m, _ in _imports("darkslim.cli", tree, functions=False)} == {"ir"}
    assert {m for m, _ in _imports("darkslim.cli", tree, functions=False,
                                   type_checking=True)} == {"ir", "export"}


@pytest.mark.parametrize("package", PACKAGES)
def test_layering(package):
    """DESIGN.md's layout table: what each package may import of ours."""
    bad = [f"{MODULES[module].relative_to(ROOT)}:{line}: imports {name}"
           for module, imports in EVERY_IMPORT.items() if _package(module) == package
           for name, line in imports
           if _package(name) in FORBIDDEN[package] | NEVER]
    assert not bad, "\n".join(bad)


def test_the_library_does_not_import_the_testing_kit():
    """darkslim.testing (the property-testing kit) is app code: no library module uses it."""
    bad = [f"{MODULES[module].relative_to(ROOT)}:{line}: imports {name}"
           for module, imports in EVERY_IMPORT.items() if _package(module) in LIBRARY
           for name, line in imports if name.startswith("darkslim")]
    assert not bad, "\n".join(bad)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path of modules, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


@pytest.mark.parametrize("functions", [False, True], ids=["module-level", "with-local"])
def test_no_import_cycle_between_library_modules(functions):
    """The imports that run form no cycle: module-level ones, nor with function-local ones
    (a local import that closes a loop only hides it). Importing a module is not an edge
    to its package's ``__init__`` (Python runs that first whoever imports the module),
    and TYPE_CHECKING imports never run."""
    graph = {module: {name for name, _ in imports if name in MODULES and name != module}
             for module, imports in _all_imports(functions=functions).items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or ())


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None

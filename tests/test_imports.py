"""The project's four packages import without cycles, function-level imports included, and
point one way: ``runs -> agents -> infocnf_env -> flows`` (docs/design.md).

The graph is read from the source with ``ast``: every ``import a.x`` and ``from a.x import y``
(or a relative one) anywhere in a module, at module level or inside a function, is an edge to
``a.x`` (to ``a.x.y`` where that is a module) and to the packages above it, whose ``__init__``
runs first; a package that holds the importing module is no edge (its ``__init__`` has started
before the module runs), unless the module imports names from it (``from a import y``). The
studies are reached by name through the registry (``runs.studies.registry``) at call time; that
is not an import and is no edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


PACKAGES = ("flows", "infocnf_env", "agents", "runs")


def import_graph(*packages: str, root: Path = ROOT) -> dict[str, set[str]]:
    """``module -> modules of the packages it imports`` (module and function level, the packages
    above an imported module too, except those that hold the importing module)."""
    paths = {module_name(p, root): p for package in packages for p in sorted((root / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in paths else module for a in node.names]
            for target in targets:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):  # the module and every package above it
                    prefix = ".".join(parts[:i])
                    holds_name = name.startswith(prefix + ".")
                    if prefix in paths and prefix != name and (prefix == target or not holds_name):
                        graph[name].add(prefix)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``None`` if it is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_find_cycle_finds_a_cycle_and_accepts_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_sees_function_level_relative_and_parent_package_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\nimport json\n")
    (pkg / "c.py").write_text("from pkg import NAME\n")  # a name of pkg/__init__.py: an edge to it
    other = tmp_path / "other"
    other.mkdir()
    (other / "__init__.py").write_text("")
    (other / "d.py").write_text("import pkg.sub.b\n")
    graph = import_graph("pkg", "other", root=tmp_path)
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"}  # pkg holds pkg.a: its __init__ runs first anyway
    assert graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.c"] == {"pkg"}
    assert graph["other.d"] == {"pkg", "pkg.sub", "pkg.sub.b"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"pkg.a", "pkg.sub.b"}


def test_the_packages_import_without_a_cycle():
    graph = import_graph(*PACKAGES)
    assert "runs.studies.digits_table" in graph and "runs.matrix" in graph["runs.run_cache"]
    assert "agents.runner" in graph["agents.loop"] and "flows.ode" in graph["infocnf_env.ode_env"]
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_imports_point_one_way():
    """``flows`` imports none of the others, ``infocnf_env`` never ``agents`` or ``runs``, and
    nothing imports ``runs``."""
    graph = import_graph(*PACKAGES)
    for module, targets in graph.items():
        package = module.split(".")[0]
        below = PACKAGES[: PACKAGES.index(package) + 1]
        upward = sorted(t for t in targets if t.split(".")[0] not in below)
        assert not upward, f"{module} imports {', '.join(upward)}"


@pytest.mark.parametrize("shared", ["runs.matrix", "runs.run_cache", "runs.aggregate", "runs.studies"])
def test_shared_infrastructure_imports_no_study(shared):
    """The run matrix, cache, aggregation and registry never import a study module (studies import them)."""
    graph = import_graph(*PACKAGES)
    seen, todo = set(), [shared]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    studies = sorted(m for m in seen if m.startswith("runs.studies."))
    assert not studies, f"{shared} imports {', '.join(studies)}"

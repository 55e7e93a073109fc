"""The core's shape: sub-packages by concern, each importing only what its docstring's
"May import:" line allows, and no import cycles between modules (imports inside functions
count: a lazy import hides a cycle from Python, not from the reader).

`python -m pytest tests/test_structure.py -v` lists the sub-packages and what each may import.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "cifar_core"
FOUNDATION = {"config", "files", "paths", "quiet", "trainer_lock"}  # the modules at the top of cifar_core/, below every sub-package
SUB_PACKAGES = sorted(p.name for p in CORE.iterdir() if (p / "__init__.py").is_file())


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the cifar_core modules it imports, anywhere in its code."""
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                candidates = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cifar_core"):
                candidates = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names if a.name.startswith("cifar_core")]
            else:
                continue
            deps.update(c for c in candidates if c in modules and c != name)
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if dep in ("cifar_core",):  # the package itself re-exports nothing
                continue
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep, path + [dep])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_has_no_import_cycles():
    graph = _imports()
    assert "cifar_core.data" in graph and graph["cifar_core.insight.evaluation"], "the import graph was read"
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def _unit(module: str) -> str:
    """The sub-package (or foundation module) a module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _allowed(package: str) -> set[str]:
    doc = ast.get_docstring(ast.parse((CORE / package / "__init__.py").read_text(encoding="utf-8"))) or ""
    found = re.search(r"^May import: (.*)$", doc, re.M)
    assert found, f"cifar_core/{package}/__init__.py: its docstring should say what it may import"
    if found.group(1).startswith("everything"):
        return set(SUB_PACKAGES) | FOUNDATION
    return {name.strip(" .") for name in found.group(1).split(",")}


def test_the_core_is_sub_packages_over_a_small_foundation():
    top = sorted(p.stem for p in CORE.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert set(top) == FOUNDATION, f"a module at the top of cifar_core/ belongs in a sub-package: {top}"
    assert {"data", "models", "training", "runs", "insight", "charts", "export", "cli"} <= set(SUB_PACKAGES)
    below = {f"{m} -> {d}" for m, deps in _imports().items() if m.split(".")[-1] in FOUNDATION and _unit(m) in FOUNDATION
             for d in deps if _unit(d) in SUB_PACKAGES}
    assert not below, f"the foundation imports a sub-package: {sorted(below)}"


@pytest.mark.parametrize("package", SUB_PACKAGES)
def test_each_sub_package_imports_only_what_its_docstring_allows(package):
    allowed = _allowed(package) | {package}
    assert allowed - {package} <= set(SUB_PACKAGES) | FOUNDATION, f"{package} allows unknown names"
    graph = _imports()
    wrong = {f"{module} -> {dep}" for module, deps in graph.items() if _unit(module) == package
             for dep in deps if _unit(dep) and _unit(dep) not in allowed}
    assert not wrong, f"cifar_core.{package} imports what its docstring does not allow: {sorted(wrong)}"


def test_the_sub_packages_allowances_form_layers_without_a_cycle():
    graph = {package: _allowed(package) & set(SUB_PACKAGES) - {package} for package in SUB_PACKAGES}
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)

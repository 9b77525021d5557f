"""The package map of docs/architecture.md, checked on the source: no import cycles between
modules, and the rules on what must never import what (every import counts, also those inside
functions)."""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "openmmml_e2former")


def _modules() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path[:-3], os.path.dirname(ROOT)).replace(os.sep, ".")
                found[module.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(modules of this package, top-level names of other packages) that ``module`` imports."""
    ours, theirs = set(), set()
    path = MODULES[module]
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (ours if alias.name.startswith("openmmml_e2former") else theirs).add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module.startswith("openmmml_e2former"):
                target = node.module
            else:
                theirs.add(node.module.split(".")[0])
                continue
            for alias in node.names:  # `from . import x` names a module; `from .m import f` does not
                candidate = f"{target}.{alias.name}"
                ours.add(candidate if candidate in MODULES else target)
    ours.discard(module)
    return {m for m in ours if m in MODULES}, theirs


GRAPH = {m: _imports(m) for m in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v][0]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return groups


def test_the_checker_sees_imports_inside_functions():
    ours, theirs = GRAPH["openmmml_e2former.simulate.ligand"]
    assert "openmmml_e2former.optional" in ours and "openmm" in theirs  # `import openmm.app` in a function


def test_no_import_cycles():
    assert _cycles() == []


def _reach(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for nxt in GRAPH[todo.pop()][0]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize(
    "prefix, forbidden_ours, forbidden_packages",
    [
        # the network is pure PyTorch: no OpenMM, no glue, no research tools
        (
            "openmmml_e2former.model",
            ("potential", "export", "simulate", "data", "train", "bench"),
            ("openmm",),
        ),
        # the OpenMM glue never reaches training or labelling code
        ("openmmml_e2former.potential", ("train", "data", "bench", "campaign", "probes", "evaluation"), ()),
        ("openmmml_e2former.export", ("train", "data", "bench", "campaign", "probes", "evaluation"), ()),
        # analysis reads files and trajectories, not networks or OpenMM systems
        (
            "openmmml_e2former.analysis",
            ("model", "potential", "export", "simulate", "train", "data"),
            ("torch",),
        ),
    ],
)
def test_layer_rules(prefix, forbidden_ours, forbidden_packages):
    for module in (m for m in MODULES if m == prefix or m.startswith(prefix + ".")):
        reached = _reach(module) | {module}
        bad = sorted(
            m for m in reached if any(m.startswith(f"openmmml_e2former.{f}") for f in forbidden_ours)
        )
        assert not bad, f"{module} reaches {bad}"
        if module.startswith(prefix):
            direct = GRAPH[module][1]
            assert not direct & set(forbidden_packages), (
                f"{module} imports {direct & set(forbidden_packages)}"
            )

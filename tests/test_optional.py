"""``pip install openmmml-e2former`` without extras gives the plug-in: the optional packages are
imported only where they are needed, and a missing one names the extra that installs it.

Nothing is uninstalled: a child Python blocks the optional packages with a ``sys.meta_path``
finder (an import of them fails as when they are not installed), then builds
``MLPotential('e2former-lsr')``'s System for a capped alanine and computes its energy, and calls
one function of each optional feature.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from openmmml_e2former.optional import PACKAGES, available, install_command, require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(ROOT, "openmmml_e2former")
PEPTIDE = os.path.join(ROOT, "tests", "data", "ace_ala_nme.pdb")

# Raw imports of optional packages allowed outside `require` (none: every one goes through it).
KNOWN_RAW_IMPORTS: set = set()

CHILD = r"""
import importlib, importlib.abc, json, sys, tempfile

BLOCKED = set(json.loads(sys.argv[1]))
preloaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in BLOCKED:
            raise ModuleNotFoundError(f"No module named {top!r} (blocked by the test)", name=top)
        return None


sys.meta_path.insert(0, Blocker())

import openmm
import openmm.app as app
import openmm.unit as unit
from openmmml import MLPotential

import openmmml_e2former  # noqa: F401

pdb = app.PDBFile(sys.argv[2])
system = MLPotential("e2former-lsr").createSystem(pdb.topology)
context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
context.setPositions(pdb.positions)
energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

from openmmml_e2former.fragments import fragment_ids_from_topology
from openmmml_e2former.molecule_fragments import brics_fragment_ids_from_coordinates, molecule_fragment_ids

# the authors' weights cut ligands at BRICS bonds: a protein has none, so no RDKit is needed
brics_peptide = [int(f) for f in molecule_fragment_ids(pdb.topology)]
residue_peptide = [int(f) for f in fragment_ids_from_topology(pdb.topology)]

methanol = app.Topology()
residue = methanol.addResidue("MOH", methanol.addChain())
c, o = (methanol.addAtom(n, app.Element.getBySymbol(n), residue) for n in ("C", "O"))
methanol.addBond(c, o)
for k in range(3):
    methanol.addBond(c, methanol.addAtom(f"H{k}", app.Element.getBySymbol("H"), residue))
methanol.addBond(o, methanol.addAtom("HO", app.Element.getBySymbol("H"), residue))


def error_of(call):
    try:
        call()
    except (ImportError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


from openmmml_e2former.data.extxyz import read_structures
from openmmml_e2former.data.labellers import PySCFLabeller, XTBLabeller
from openmmml_e2former.train.tblog import TensorBoardLog
from openmmml_e2former.bench.peers import build_mace_off23

folder = tempfile.mkdtemp()
errors = {
    "ase": error_of(lambda: importlib.import_module("openmmml_e2former.ase")),
    "ligand": error_of(lambda: molecule_fragment_ids(methanol)),
    "coordinates": error_of(lambda: brics_fragment_ids_from_coordinates([6, 8], [[0, 0, 0], [1.4, 0, 0]])),
    "xtb": error_of(XTBLabeller),
    "dft": error_of(lambda: PySCFLabeller(gpu=False)),
    "dataset": error_of(lambda: read_structures(folder)),
    "mace": error_of(lambda: build_mace_off23("small")),
    "tensorboard": error_of(lambda: TensorBoardLog(folder, "true")),
}
print(json.dumps({
    "preloaded": preloaded,
    "energy": energy,
    "brics_peptide": brics_peptide,
    "residue_peptide": residue_peptide,
    "tensorboard_auto": TensorBoardLog(folder, "auto").active,
    "errors": errors,
}))
"""


@pytest.fixture(scope="module")
def blocked_run():
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(sorted(PACKAGES)), PEPTIDE],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def reference_energy() -> float:
    """The same System's energy in this process, where every optional package is importable."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit
    from openmmml import MLPotential

    pdb = app.PDBFile(PEPTIDE)
    system = MLPotential("e2former-lsr").createSystem(pdb.topology)
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(pdb.positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_the_plugin_runs_without_the_optional_packages(blocked_run):
    assert blocked_run["preloaded"] == []  # the blocker was in place before anything imported them
    energy = blocked_run["energy"]
    assert np.isfinite(energy)
    assert energy == pytest.approx(reference_energy(), rel=1e-6)
    # ligandFragments='brics' (the authors' weights) on a protein: residues, no RDKit
    assert blocked_run["brics_peptide"] == blocked_run["residue_peptide"]
    assert blocked_run["tensorboard_auto"] is False  # auto: CSV logs only, no error


@pytest.mark.parametrize(
    "feature, package, extra",
    [
        ("ase", "ase", "ase"),
        ("ligand", "rdkit", "ligands"),
        ("coordinates", "rdkit", "ligands"),
        ("xtb", "tblite", "labels"),
        ("dft", "pyscf", "dft"),
        ("dataset", "ase", "train"),
        ("mace", "mace-torch", "bench"),
        ("tensorboard", "tensorboard", "tensorboard"),
    ],
)
def test_a_missing_package_names_its_extra(blocked_run, feature, package, extra):
    message = blocked_run["errors"][feature]
    assert message is not None, f"{feature}: no error although {package} is blocked"
    assert package in message
    assert install_command(extra) in message
    if feature != "tensorboard":  # training.tensorboard=true reports a ValueError (its setting)
        assert message.startswith("ImportError") and "is not installed" in message


def test_require_imports_or_names_the_extra():
    assert require("json.decoder", "nothing").__name__ == "json.decoder"
    with pytest.raises(ImportError, match=re.escape("pip install 'openmmml-e2former[demo]'")) as info:
        require("no_such_package_e2f.sub", "demo", "the demo feature")
    assert "no_such_package_e2f is needed for the demo feature but is not installed" in str(info.value)
    assert available("json") and not available("no_such_package_e2f") and not available("no_such.x")


def test_a_broken_package_is_not_reported_as_missing(tmp_path, monkeypatch):
    (tmp_path / "broken_e2f").mkdir()
    (tmp_path / "broken_e2f" / "__init__.py").write_text("import no_such_dependency_e2f\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="does not import .*no_such_dependency_e2f") as info:
        require("broken_e2f", "demo")
    assert "not installed" not in str(info.value)


# --- the source follows the rule, and the extras it names exist and install the package ---


def package_sources():
    for folder, _, files in os.walk(PACKAGE_DIR):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, PACKAGE_DIR), ast.parse(open(path, encoding="utf-8").read())


def imported_tops(node) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name.partition(".")[0] for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module.partition(".")[0]]
    return []


def test_no_module_level_import_of_an_optional_package():
    found = []
    for relpath, tree in package_sources():
        stack = list(tree.body)  # what runs on import: all but function bodies
        while stack:
            node = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            found += [(relpath, top) for top in imported_tops(node) if top in PACKAGES]
            stack.extend(ast.iter_child_nodes(node))
    assert found == []


def test_optional_packages_are_imported_through_require():
    raw = set()
    for relpath, tree in package_sources():
        for node in ast.walk(tree):
            raw |= {(relpath, top) for top in imported_tops(node) if top in PACKAGES}
    new = sorted(raw - KNOWN_RAW_IMPORTS)
    assert new == [], f"import these through openmmml_e2former.optional.require: {new}"


def extras_of_pyproject() -> dict[str, set[str]]:
    """Extra -> the distributions it installs (self-references ``openmmml-e2former[a,b]`` followed)."""
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        declared = tomllib.load(handle)["project"]["optional-dependencies"]

    def expand(extra: str, seen: frozenset = frozenset()) -> set[str]:
        assert extra not in seen, f"extras refer to each other in a cycle: {sorted(seen)}"
        out = set()
        for requirement in declared[extra]:
            name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
            if name == "openmmml-e2former":
                for inner in re.search(r"\[(.*)\]", requirement).group(1).split(","):
                    out |= expand(inner.strip(), seen | {extra})
            else:
                out.add(name)
        return out

    return {extra: expand(extra) for extra in declared}


def test_every_named_extra_installs_the_package():
    extras = extras_of_pyproject()
    calls = []
    for relpath, tree in package_sources():
        for node in ast.walk(tree):
            name = getattr(node, "func", None) and getattr(node.func, "id", None)
            if isinstance(node, ast.Call) and name in ("require", "install_command"):
                args = [a.value if isinstance(a, ast.Constant) else None for a in node.args]
                extra = args[1] if name == "require" and len(args) > 1 else args[0]
                module = args[0] if name == "require" else None
                calls.append((relpath, module, extra))
    assert len(calls) >= 8  # the scan sees the call sites
    for relpath, module, extra in calls:
        if relpath == "optional.py" or extra is None:
            continue
        assert extra in extras, f"{relpath}: extra {extra!r} is not in pyproject.toml"
        if module is not None:
            top = module.partition(".")[0]
            assert top in PACKAGES, f"{relpath}: add {top} to openmmml_e2former.optional.PACKAGES"
            package = PACKAGES[top]
            assert package in extras[extra], f"{relpath}: extra {extra!r} does not install {package}"
    # the wrappers' extras (their module argument is a variable)
    assert "rdkit" in extras["ligands"] and "ase" in extras["train"] and "pyscf" in extras["dft"]
    everything = set().union(*(extras[e] for e in extras if e not in ("pinned", "latest", "cuda12", "dev")))
    assert everything <= extras["all"] | {"pytest", "ruff"}
    assert extras["all"] <= extras["dev"]
    assert set(PACKAGES.values()) <= extras["all"]

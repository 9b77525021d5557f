"""Fixtures shared by several test files: structures read once per session, small seeded
networks built once per session, and one libtorch thread.

Session fixtures hand the same object to every test that asks: treat them as read-only
(a test that edits a topology or a model makes its own copy). Plain builders live in
``model_helpers.py`` and ``simulate_helpers.py``.
"""

from __future__ import annotations

import os

import pytest
import torch
from model_helpers import REFERENCE_FIXTURE, seeded_model, villin_pdb_path

from openmmml_e2former.chemistry import is_water_or_ion

HERE = os.path.dirname(os.path.abspath(__file__))
DIPEPTIDE_PDB = os.path.join(HERE, "data", "ace_ala_nme.pdb")


@pytest.fixture(scope="session")
def villin_pdb():
    """``openmm.app.PDBFile`` of villin in water; read-only (``app.Modeller(pdb.topology,
    pdb.positions)`` gives an editable copy)."""
    import openmm.app as app

    return app.PDBFile(villin_pdb_path())


@pytest.fixture(scope="session")
def villin_traj():
    """The same file as an mdtraj ``Trajectory`` (one frame); read-only."""
    import mdtraj

    return mdtraj.load(villin_pdb_path())


@pytest.fixture(scope="session")
def villin_inputs(villin_pdb):
    """Villin's protein atoms as network inputs: (positions [582, 3] Angstrom float64,
    atomic numbers, fragment ids from the topology (one per residue))."""
    import numpy as np
    import openmm.unit as unit

    from openmmml_e2former.fragments import fragment_ids_from_topology

    atoms = [a for a in villin_pdb.topology.atoms() if not is_water_or_ion(a.residue.name)]
    indices = [a.index for a in atoms]
    xyz = np.asarray(villin_pdb.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
    positions = torch.tensor(xyz[indices], dtype=torch.float64)
    numbers = torch.tensor([a.element.atomic_number for a in atoms], dtype=torch.long)
    fragments = torch.tensor(fragment_ids_from_topology(villin_pdb.topology, indices), dtype=torch.long)
    return positions, numbers, fragments


@pytest.fixture(scope="session")
def villin_piece(villin_traj):
    """``villin_piece(path, selection)`` writes the villin atoms an mdtraj selection picks
    (e.g. ``"resid 0 to 2"``) as a PDB file at ``path`` and returns ``path``."""

    def write(path: str, selection: str = "protein") -> str:
        villin_traj.atom_slice(villin_traj.topology.select(selection)).save_pdb(path)
        return path

    return write


@pytest.fixture(scope="session")
def dipeptide_pdb():
    """``openmm.app.PDBFile`` of tests/data/ace_ala_nme.pdb (ACE-ALA-ALA-NME); read-only."""
    import openmm.app as app

    return app.PDBFile(DIPEPTIDE_PDB)


@pytest.fixture(scope="session")
def cached_seeded_model():
    """``cached_seeded_model(dtype=torch.float64, **config_changes)``: ``model_helpers.seeded_model``
    built once per session for each argument set; read-only (the same object every call)."""
    cache: dict = {}

    def get(dtype: torch.dtype = torch.float64, **changes) -> torch.nn.Module:
        key = (dtype, tuple(sorted(changes.items())))
        if key not in cache:
            cache[key] = seeded_model(dtype, **changes)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def reference_network():
    """The authors' reference-fixture network (tests/fixtures/ubio-e2former-lsr: their
    semantics, kcal/mol), float32 as stored; read-only (``copy.deepcopy`` it to change it)."""
    from openmmml_e2former.checkpoints import load_checkpoint

    model, _ = load_checkpoint(os.path.join(REFERENCE_FIXTURE, "state_dict.pt"))
    return model


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op libtorch thread for a module's tests (the network's and TorchForce's calls).

    The molecules in the tests are small: on a 2-core machine shared with other jobs,
    OpenMP's spinning threads made each call 10-20x slower. Numbers do not depend on it.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

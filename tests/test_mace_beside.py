"""MACE (mace-torch, through openmm-ml's own 'mace' potential) and E2Former-LSR in one process.

The issue: mace-torch pins e3nn 0.4.4, which our old e3nn pin excluded. Both potentials are
built here in one process and one OpenMM System; MACE's OpenMM energy is checked against
mace-torch's own ASE calculator (an independent path), ours against the same System built
before MACE was imported.
"""

from __future__ import annotations

import copy
import os

import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
from openmmml import MLPotential

from openmmml_e2former.bench.peers import save_mace_off23
from openmmml_e2former.units import KJ_PER_MOL

OPENMMML_MACE_EV = 96.4853  # openmmml/models/macepotential.py, energyScale
PDB = os.path.join(os.path.dirname(__file__), "data", "ace_ala_nme.pdb")


def energy(system, positions) -> float:
    platform = openmm.Platform.getPlatformByName("Reference")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_mace_and_e2former_in_one_process_and_one_system(tmp_path):
    pdb = app.PDBFile(PDB)
    ours = MLPotential("e2former-lsr").createSystem(pdb.topology)
    ours_before = energy(ours, pdb.positions)

    path = save_mace_off23(str(tmp_path / "mace-off23-small-random.model"), "small", seed=0)
    mace_system = MLPotential("mace", modelPath=path).createSystem(pdb.topology, precision="double")
    mace_openmm = energy(mace_system, pdb.positions)

    from ase.io import read
    from mace.calculators import MACECalculator

    atoms = read(PDB)
    atoms.calc = MACECalculator(model_paths=path, device="cpu", default_dtype="float64")
    # openmm-ml's MACE wrapper converts eV with 96.4853 kJ/mol (ours, units.py: 96.48533212...)
    mace_ase = atoms.get_potential_energy() * OPENMMML_MACE_EV
    assert mace_openmm == pytest.approx(mace_ase, rel=1e-9, abs=1e-6)
    assert OPENMMML_MACE_EV == pytest.approx(KJ_PER_MOL["eV"], rel=5e-7)

    assert energy(ours, pdb.positions) == pytest.approx(ours_before, rel=1e-12, abs=1e-9)
    both = copy.deepcopy(mace_system)
    for force in ours.getForces():
        both.addForce(copy.deepcopy(force))
    assert energy(both, pdb.positions) == pytest.approx(ours_before + mace_openmm, rel=1e-9, abs=1e-5)

"""The ASE calculator against OpenMM (same structure and weights through MLPotential), finite
differences of its own energy (forces and stress), and an ASE geometry optimisation."""

from __future__ import annotations

import os

import numpy as np
import pytest

ase = pytest.importorskip("ase")
from ase.io import read  # noqa: E402

from openmmml_e2former.ase import E2FormerCalculator, reduced_frame, residue_fragment_ids  # noqa: E402
from openmmml_e2former.units import KJ_PER_MOL_TO_EV  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "ace_ala_nme.pdb")

# one libtorch thread for the calculator's calls (conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def openmm_energy_forces(pdb_path: str, potential: str = "e2former-lsr"):
    """(eV, eV/Å) of the whole structure as the ML region, double precision, Reference platform."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit
    from openmmml import MLPotential

    from openmmml_e2former.potential import ensure_torch_plugins

    ensure_torch_plugins()
    pdb = app.PDBFile(pdb_path)
    system = MLPotential(potential, precision="double").createSystem(pdb.topology)
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions(pdb.positions)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_PER_MOL_TO_EV
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.angstrom)
    return energy, np.asarray(forces) * KJ_PER_MOL_TO_EV


@pytest.mark.parametrize("piece", ["dipeptide", "villin-5-residues"])
def test_matches_openmm(tmp_path, piece, villin_piece):
    """Same weights, same fragments (residues; caps merged) and float64: OpenMM's energy and
    forces through TorchForce equal the calculator's."""
    path = DATA if piece == "dipeptide" else villin_piece(str(tmp_path / "p.pdb"), "resid 0 to 4")
    atoms = read(path)
    atoms.calc = E2FormerCalculator()
    energy, forces = openmm_energy_forces(path)
    assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-6)


def test_residue_fragments_merge_caps():
    numbers = [1, 1, 2, 2, 2, 3, 3, 7]
    names = ["ACE", "ACE", "ALA", "ALA", "ALA", "GLY", "GLY", "NME"]
    assert residue_fragment_ids(numbers, names).tolist() == [0, 0, 0, 0, 0, 1, 1, 1]


def test_forces_are_minus_the_energy_gradient():
    """Central differences of the calculator's own energies (float64) along a random direction
    over all atoms and along the largest force component: the calculator's units and frame,
    not the network (test_model_invariants checks its forces in every configuration)."""
    atoms = read(DATA)
    atoms.calc = E2FormerCalculator()
    forces = atoms.get_forces()
    start = atoms.get_positions()
    random = np.random.default_rng(0).normal(size=forces.shape)
    largest = np.zeros(forces.size)
    largest[np.abs(forces).argmax()] = 1.0
    h = 1e-4  # Angstrom
    for direction in (random / np.linalg.norm(random), largest.reshape(forces.shape)):
        energies = []
        for sign in (1, -1):
            atoms.set_positions(start + sign * h * direction)
            energies.append(atoms.get_potential_energy())
        slope = (energies[0] - energies[1]) / (2 * h)
        assert slope == pytest.approx(-(forces * direction).sum(), abs=2e-5)


def test_periodic_stress_matches_finite_differences():
    """A water cluster in a triclinic (non-reduced, rotated) cell: energy and forces do not
    depend on the frame, and the stress is the strain derivative of the energy."""
    from ase.build import molecule

    waters = []
    rng = np.random.default_rng(0)
    for k in range(8):
        w = molecule("H2O")
        w.rotate(rng.uniform(0, 360), rng.normal(size=3))
        w.translate([3.1 * (k % 2), 3.1 * ((k // 2) % 2), 3.1 * (k // 4)])
        waters.append(w)
    atoms = waters[0]
    for w in waters[1:]:
        atoms += w
    cell = np.array([[40.0, 0.0, 0.0], [3.0, 39.0, 0.0], [-2.0, 4.0, 41.0]])
    atoms.set_cell(cell)
    atoms.pbc = True
    atoms.calc = E2FormerCalculator(fragments=np.repeat(np.arange(8), 3))
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    stress = atoms.get_stress()
    np.testing.assert_allclose(stress, atoms.calc.calculate_numerical_stress(atoms, d=1e-5), atol=1e-7)
    assert np.abs(stress).max() > 1e-6  # the check above is not comparing zeros
    rotated = atoms.copy()
    rotated.rotate(37, (1, 2, 3), rotate_cell=True)
    rotated.calc = E2FormerCalculator(fragments=np.repeat(np.arange(8), 3))
    assert rotated.get_potential_energy() == pytest.approx(energy, abs=1e-8)
    turned = ase.Atoms("X" * len(forces), positions=forces)  # forces turned the same way
    turned.rotate(37, (1, 2, 3))
    np.testing.assert_allclose(rotated.get_forces(), turned.positions, atol=1e-8)


def test_reduced_frame_is_openmm_reduced_form():
    rng = np.random.default_rng(1)
    cell = np.diag([30.0, 31.0, 32.0]) + rng.uniform(-8, 8, size=(3, 3))
    rotation, box = reduced_frame(cell)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert box[0, 1] == box[0, 2] == box[1, 2] == 0.0 and (np.diag(box) > 0).all()
    assert abs(box[1, 0]) <= box[0, 0] / 2 and abs(box[2, 0]) <= box[0, 0] / 2
    assert abs(box[2, 1]) <= box[1, 1] / 2
    # the same lattice: the reduced rows are integer combinations of the rotated cell's rows
    combination = box @ np.linalg.inv(cell @ rotation)
    np.testing.assert_allclose(combination, np.round(combination), atol=1e-9)


def test_geometry_optimisation_lowers_the_energy():
    from ase.optimize import BFGS

    atoms = read(DATA)
    atoms.calc = E2FormerCalculator(dtype="float32")
    before, largest = atoms.get_potential_energy(), np.abs(atoms.get_forces()).max()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=30)
    assert atoms.get_potential_energy() < before - 0.01
    assert np.abs(atoms.get_forces()).max() < largest

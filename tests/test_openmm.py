"""OpenMM plumbing of the openmm-ml plug-in: MLPotential('e2former-lsr') / ('e2former').

These tests check the boundary between OpenMM and the network, not the network itself:
units (nm <-> Angstrom, kJ/mol <-> eV), atom selection, force signs, serialisation,
mixed ML/MM systems with link atoms, and that bad input raises an error naming its cause.
The reference values come from the network built directly with the same seed, evaluated
in float64 by plain PyTorch autograd.

Most OpenMM energies are taken from a fresh Context: TorchScript's profiling executor
re-optimises the graph on the 2nd and 3rd call of a module, which costs seconds on a
small CPU, whereas the first call of each fresh Context runs the unoptimised graph.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch  # must be imported before openmmtorch (libnvrtc)

# isort: split
import openmm
import openmm.app as app
import openmm.unit as unit
import openmmtorch
from model_helpers import openmm_platforms
from openmmml import MLPotential

from openmmml_e2former.checkpoints import save_checkpoint
from openmmml_e2former.export import OpenMMModule, save_module
from openmmml_e2former.fragments import fragment_ids_from_topology
from openmmml_e2former.model import E2FormerLSR, small_config
from openmmml_e2former.potential import torchforce_cannot_be_copied
from openmmml_e2former.units import EV_TO_KJ_PER_MOL

DATA = os.path.join(os.path.dirname(__file__), "data")
DIPEPTIDE_PDB = os.path.join(DATA, "ace_ala_nme.pdb")

# 1 eV in kJ/mol, written out independently of the package: e (C) * N_A / 1000.
EV = 1.602176634e-19 * 6.02214076e23 / 1000.0
# eV/Angstrom -> kJ/mol/nm
EV_PER_A = EV * 10.0
KJ = unit.kilojoule_per_mole
KJ_NM = unit.kilojoule_per_mole / unit.nanometer
BACKENDS = ["torchforce", "pythonforce"]
SEED = 0
NOT_SOLUTE = {"HOH", "Cl", "CL", "NA", "Na"}


# ----------------------------------------------------------------------------- helpers


def load_dipeptide() -> app.PDBFile:
    """A fresh copy (tests that set a box must not change a shared topology)."""
    return app.PDBFile(DIPEPTIDE_PDB)


def cubic_box(edge_nm: float):
    """Box vectors as OpenMM's PDB reader gives them: a list of Vec3 in nm."""
    return [
        openmm.Vec3(edge_nm, 0, 0),
        openmm.Vec3(0, edge_nm, 0),
        openmm.Vec3(0, 0, edge_nm),
    ] * unit.nanometer


def positions_nm(positions) -> np.ndarray:
    return np.asarray(positions.value_in_unit(unit.nanometer), dtype=np.float64)


def evaluate(system, positions, platform="Reference", groups=-1, box=None, parameters=None):
    """(energy kJ/mol, forces [n, 3] kJ/mol/nm) from a fresh Context."""
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    try:
        if box is not None:
            context.setPeriodicBoxVectors(*box)
        context.setPositions(with_sites(system, positions))
        context.computeVirtualSites()  # openmm-ml >= 1.8 link atoms are virtual sites
        for name, value in (parameters or {}).items():
            context.setParameter(name, value)
        state = context.getState(getEnergy=True, getForces=True, groups=groups)
        energy = state.getPotentialEnergy().value_in_unit(KJ)
        forces = np.asarray(state.getForces(asNumpy=True).value_in_unit(KJ_NM))
        return energy, forces
    finally:
        del context, integrator


def with_sites(system, positions):
    """``positions`` padded for particles a mixed system appended (openmm-ml >= 1.8 puts a
    virtual-site link atom at the end for every cut bond; its position is computed)."""
    extra = system.getNumParticles() - len(positions)
    if extra <= 0:
        return positions
    return np.vstack([positions_nm(positions), np.zeros((extra, 3))]) * unit.nanometer


def evaluate_energy(system, positions, platform="Reference", groups=-1, parameters=None) -> float:
    return evaluate(system, positions, platform, groups, parameters=parameters)[0]


@functools.cache
def seeded_network(long_range: bool = True) -> E2FormerLSR:
    """The network that MLPotential(name, randomInit=True, seed=SEED) builds, in float64."""
    torch.manual_seed(SEED)
    config = small_config() if long_range else small_config(num_long_layers=0)
    return E2FormerLSR(config).eval().double()


def network_reference(topology, positions, atoms=None, long_range=True, box_nm=None):
    """Energy (kJ/mol) and forces (kJ/mol/nm, zero outside ``atoms``) straight from the net."""
    model = seeded_network(long_range)
    xyz = positions_nm(positions)
    atoms = list(range(topology.getNumAtoms())) if atoms is None else list(atoms)
    all_atoms = list(topology.atoms())
    numbers = torch.tensor([all_atoms[i].element.atomic_number for i in atoms], dtype=torch.long)
    fragments = torch.tensor(np.asarray(fragment_ids_from_topology(topology, atoms)), dtype=torch.long)
    coords = torch.tensor(xyz[atoms] * 10.0, dtype=torch.float64, requires_grad=True)
    box = None if box_nm is None else torch.tensor(np.asarray(box_nm) * 10.0, dtype=torch.float64)
    energy = model(coords, numbers, fragments, torch.tensor(0.0, dtype=torch.float64), box, None)
    (gradient,) = torch.autograd.grad(energy, coords)
    forces = np.zeros_like(xyz)
    forces[atoms] = -gradient.numpy() * EV_PER_A
    return float(energy.detach()) * EV, forces


def assert_energy_close(actual: float, expected: float, rtol: float, what: str = "energy") -> None:
    assert math.isfinite(actual), f"{what} is not finite: {actual}"
    assert abs(actual - expected) <= rtol * max(abs(expected), 1e-8), (
        f"{what}: {actual!r} kJ/mol != {expected!r} kJ/mol (rel. diff "
        f"{abs(actual - expected) / max(abs(expected), 1e-300):.3g} > {rtol})"
    )


def assert_forces_close(actual: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    assert actual.shape == expected.shape
    assert np.isfinite(actual).all()
    scale = np.abs(expected).max()
    worst = np.abs(actual - expected).max()
    assert scale > 0
    assert worst <= rtol * scale, f"forces: max |dF| = {worst:.3g} > {rtol} * max |F| = {rtol * scale:.3g}"


def lsr_potential() -> MLPotential:
    return MLPotential("e2former-lsr", randomInit=True, seed=SEED)


def dipeptide_system(backend: str = "torchforce", precision: str = "double", name: str = "e2former-lsr"):
    """ML-only System for the (vacuum) dipeptide.

    TorchForce systems are cached (scripting costs seconds; every Context loads its own
    copy of the module).  A PythonForce shares one Python module between all Contexts,
    so its 2nd and 3rd calls would pay for TorchScript's re-optimisation: build it anew.
    """
    if backend == "torchforce":
        return _cached_system(backend, precision, name)
    return _cached_system.__wrapped__(backend, precision, name)


@functools.cache
def _cached_system(backend: str, precision: str, name: str):
    potential = MLPotential(name, randomInit=True, seed=SEED)
    return potential.createSystem(load_dipeptide().topology, precision=precision, backend=backend)


def ml_forces(system):
    """The ML forces of a System (System.getForces() returns a TorchForce as a plain Force)."""
    found = []
    for force in system.getForces():
        if openmmtorch.TorchForce.isinstance(force):
            found.append(openmmtorch.TorchForce.cast(force))
        elif isinstance(force, openmm.PythonForce):
            found.append(force)
    return found


def villin_solute(pdb: app.PDBFile) -> app.Modeller:
    """Villin headpiece without waters and ions (582 atoms, no box), an editable copy of
    ``pdb`` (the session's ``villin_pdb``)."""
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.deleteWater()
    modeller.delete([r for r in modeller.topology.residues() if r.name in NOT_SOLUTE])
    modeller.topology.setPeriodicBoxVectors(None)
    return modeller


# ----------------------------------------------------------------------------- fixtures

# one libtorch thread (TorchForce and PythonForce alike): see conftest.py; ``dipeptide_pdb`` and
# ``villin_pdb`` come from there too
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dipeptide_reference(dipeptide_pdb):
    return network_reference(dipeptide_pdb.topology, dipeptide_pdb.positions)


@pytest.fixture(scope="module")
def amber():
    return app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")


# ------------------------------------------------------- 1. OpenMM energy == network energy


def test_energy_conversion_constant():
    assert EV_TO_KJ_PER_MOL == pytest.approx(96.48533212331, rel=1e-12)
    assert EV_TO_KJ_PER_MOL == pytest.approx(EV, rel=1e-14)


@pytest.mark.parametrize("platform", openmm_platforms())
@pytest.mark.parametrize(
    "name, backend, precision, rtol",
    [("e2former-lsr", b, "double", 1e-5) for b in BACKENDS]
    + [("e2former-lsr", b, "single", 1e-4) for b in BACKENDS]
    + [("e2former", "torchforce", "double", 1e-5)],
)
def test_energy_and_forces_match_network(
    dipeptide_pdb, dipeptide_reference, name, backend, precision, rtol, platform
):
    """On every platform (CUDA ones: marked gpu), both backends, both precisions, and the
    local-only potential ('e2former'); test_model_invariants runs the exported module of
    every network configuration the same way."""
    if platform not in ("Reference", "CPU") and not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA device")
    system = dipeptide_system(backend, precision, name)
    (force,) = ml_forces(system)
    expected = openmm.PythonForce if backend == "pythonforce" else openmmtorch.TorchForce
    assert isinstance(force, expected)
    assert not force.usesPeriodicBoundaryConditions()
    energy, forces = evaluate(system, dipeptide_pdb.positions, platform)
    if name == "e2former-lsr":
        ref_energy, ref_forces = dipeptide_reference
    else:
        ref_energy, ref_forces = network_reference(
            dipeptide_pdb.topology, dipeptide_pdb.positions, long_range=False
        )
    assert_energy_close(energy, ref_energy, rtol)
    assert_forces_close(forces, ref_forces, rtol)


def test_recompute_option_keeps_energy_and_forces(dipeptide_pdb, dipeptide_reference, monkeypatch):
    """recompute=True (Python-side backend) trades memory for time, not the function; the
    TorchForce route cannot do it and says so before any simulation."""
    calls = []
    original = E2FormerLSR._recomputed_local_block

    def counted(self, *args):
        calls.append(args[0])
        return original(self, *args)

    monkeypatch.setattr(E2FormerLSR, "_recomputed_local_block", counted)
    system = lsr_potential().createSystem(
        dipeptide_pdb.topology, backend="pythonforce", precision="double", recompute=True
    )
    energy, forces = evaluate(system, dipeptide_pdb.positions)
    assert calls, "the network did not recompute"
    assert_energy_close(energy, dipeptide_reference[0], 1e-5)
    assert_forces_close(forces, dipeptide_reference[1], 1e-5)
    with pytest.raises(ValueError, match="recompute=True needs backend='pythonforce'"):
        lsr_potential().createSystem(dipeptide_pdb.topology, backend="torchforce", recompute=True)


def test_periodic_box_is_passed_in_nanometres():
    """A periodic dipeptide (box 4 nm >= 2 x 1.8 nm): the box reaches the network in Angstrom.

    The molecule is moved so that it straddles a box corner, so a wrong box (units or
    missing) changes the minimum-image geometry and the energy.
    """
    pdb = load_dipeptide()
    edge = 4.0
    pdb.topology.setPeriodicBoxVectors(cubic_box(edge))
    xyz = positions_nm(pdb.positions)
    xyz = xyz - xyz.mean(axis=0)  # centred on the origin: atoms on both sides of the faces
    wrapped = xyz - np.floor(xyz / edge) * edge  # every atom put into the primary cell
    system = lsr_potential().createSystem(pdb.topology, precision="double")
    (force,) = ml_forces(system)
    assert force.usesPeriodicBoundaryConditions()
    energy, forces = evaluate(system, wrapped * unit.nanometer, "Reference")
    ref_energy, ref_forces = network_reference(pdb.topology, xyz * unit.nanometer)
    assert_energy_close(energy, ref_energy, 1e-5)
    assert_forces_close(forces, ref_forces, 1e-5)


def test_repeated_evaluation_after_jit_optimisation(dipeptide_pdb, dipeptide_reference):
    """TorchScript's profiling executor swaps in an optimised graph from the 3rd call of a
    module on: those calls must give the same numbers as the first (unoptimised) one."""
    system = dipeptide_system("torchforce", "double")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(dipeptide_pdb.positions)
    for call in range(4):
        state = context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(KJ)
        forces = np.asarray(state.getForces(asNumpy=True).value_in_unit(KJ_NM))
        assert_energy_close(energy, dipeptide_reference[0], 1e-5, f"energy of call {call + 1}")
        assert_forces_close(forces, dipeptide_reference[1], 1e-5)


def test_numpy_box_vectors_are_accepted():
    pdb = load_dipeptide()
    pdb.topology.setPeriodicBoxVectors(np.eye(3) * 4.0 * unit.nanometer)
    system = lsr_potential().createSystem(pdb.topology)
    assert ml_forces(system)[0].usesPeriodicBoundaryConditions()


def test_box_shrunk_below_cutoff_at_run_time_raises():
    """A System built with a 4 nm box, then given a 3 nm box (as a barostat could)."""
    pdb = load_dipeptide()
    pdb.topology.setPeriodicBoxVectors(cubic_box(4.0))
    system = lsr_potential().createSystem(pdb.topology, precision="double")
    small = cubic_box(3.0)
    with pytest.raises((openmm.OpenMMException, ValueError), match="box too small"):
        evaluate(system, pdb.positions, "Reference", box=small)


# --------------------------------------------------------------- 2. serialisation / copies


# openmm >= 8.6 segfaults when it deserialises a TorchForce (README, "Install"): the plug-in
# defaults to the Python-side backend there and warns when a TorchForce is asked for
copyable_torchforce = pytest.mark.skipif(
    torchforce_cannot_be_copied(), reason="openmm >= 8.6 cannot deserialise a TorchForce (documented)"
)


@copyable_torchforce
def test_torchforce_system_xml_round_trip(dipeptide_pdb, dipeptide_reference):
    system = dipeptide_system("torchforce", "double")
    xml = openmm.XmlSerializer.serialize(system)
    assert "TorchForce" in xml
    restored = openmm.XmlSerializer.deserialize(xml)
    assert len(ml_forces(restored)) == 1
    energy = evaluate_energy(restored, dipeptide_pdb.positions)
    assert_energy_close(energy, dipeptide_reference[0], 1e-5)


@copyable_torchforce
def test_torchforce_system_deepcopy(dipeptide_pdb, dipeptide_reference):
    system = copy.deepcopy(dipeptide_system("torchforce", "double"))
    energy = evaluate_energy(system, dipeptide_pdb.positions, "CPU")
    assert_energy_close(energy, dipeptide_reference[0], 1e-5)


@copyable_torchforce
def test_torchforce_inside_custom_cv_force(dipeptide_pdb, dipeptide_reference):
    source = dipeptide_system("torchforce", "double")
    (force,) = ml_forces(source)
    system = openmm.System()
    for i in range(source.getNumParticles()):
        system.addParticle(source.getParticleMass(i))
    cv = openmm.CustomCVForce("ml")
    cv.addCollectiveVariable("ml", copy.deepcopy(force))
    system.addForce(cv)
    energy, forces = evaluate(system, dipeptide_pdb.positions)
    assert_energy_close(energy, dipeptide_reference[0], 1e-5)
    assert_forces_close(forces, dipeptide_reference[1], 1e-5)


def test_pythonforce_system_xml_round_trip(dipeptide_pdb, dipeptide_reference):
    system = dipeptide_system("pythonforce", "double")
    restored = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    (force,) = ml_forces(restored)
    assert isinstance(force, openmm.PythonForce)
    energy, forces = evaluate(restored, dipeptide_pdb.positions)
    assert_energy_close(energy, dipeptide_reference[0], 1e-5)
    assert_forces_close(forces, dipeptide_reference[1], 1e-5)


# ------------------------------------------------------------------ 3. villin mixed system MD


# 130-180 s on a 2-core CPU (1.3 s/step): the longest default test, kept in CI on purpose (issue 2)
def test_villin_mixed_system_md_stays_finite(amber, villin_pdb):
    pdb = villin_pdb
    assert pdb.topology.getNumAtoms() == 8867
    mm_system = amber.createSystem(
        pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=1 * unit.nanometer, constraints=app.HBonds
    )
    ml_atoms = [a.index for a in pdb.topology.atoms() if a.residue.name not in NOT_SOLUTE]
    assert len(ml_atoms) == 582
    # removeConstraints=False keeps the X-H constraints inside the protein.  Without them
    # the untrained network (which binds nothing) lets the hydroxyl/amine hydrogens, which
    # have no LJ in Amber, fall onto water oxygens within a few dozen fs (seen: NaN after
    # 18 steps with another random seed) -- a property of a random model, not of the plumbing.
    system = lsr_potential().createMixedSystem(pdb.topology, mm_system, ml_atoms, removeConstraints=False)
    (force,) = ml_forces(system)
    assert force.usesPeriodicBoundaryConditions()
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(pdb.positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    start = time.perf_counter()
    integrator.step(100)
    elapsed = time.perf_counter() - start
    state = context.getState(getEnergy=True, getPositions=True)
    print(
        f"\nvillin mixed ML/MM (582 ML atoms, 8867 total), CPU platform: {1000 * elapsed / 100:.0f} ms/step"
    )
    xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    assert np.isfinite(xyz).all()
    assert math.isfinite(state.getPotentialEnergy().value_in_unit(KJ))
    assert math.isfinite(state.getKineticEnergy().value_in_unit(KJ))
    # Nothing flew apart (minimum image: the CPU platform may return positions shifted by
    # whole box vectors).  The protein's bonded MM terms are gone and the random network
    # does not replace them, so only a loose bound makes sense.
    edges = np.diag(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
    moved = xyz - positions_nm(pdb.positions)
    moved -= np.round(moved / edges) * edges
    print(f"largest displacement after 100 fs: {np.abs(moved).max():.3f} nm")
    assert np.abs(moved).max() < 1.0


# ----------------------------------------------------------------------- 4. interpolation


def test_interpolate_endpoints(dipeptide_pdb, amber):
    """lambda_interpolate = 1 gives the mixed system, 0 the pure MM system.

    The ML region (ACE-ALA-ALA) cuts the ALA-NME peptide bond, so a link atom and MM
    terms across the boundary are involved.
    """
    topology = dipeptide_pdb.topology
    mm_system = amber.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
    ml_atoms = [a.index for a in topology.atoms() if a.residue.name != "NME"]
    assert 0 < len(ml_atoms) < topology.getNumAtoms()
    potential = lsr_potential()
    mixed = potential.createMixedSystem(topology, mm_system, ml_atoms, precision="double")
    interpolated = potential.createMixedSystem(
        topology, mm_system, ml_atoms, interpolate=True, precision="double"
    )

    e_mm, f_mm = evaluate(mm_system, dipeptide_pdb.positions)
    e_mixed, f_mixed = evaluate(mixed, dipeptide_pdb.positions)
    e_one, f_one = evaluate(interpolated, dipeptide_pdb.positions, parameters={"lambda_interpolate": 1.0})
    e_zero, f_zero = evaluate(interpolated, dipeptide_pdb.positions, parameters={"lambda_interpolate": 0.0})
    scale = max(abs(e_mm), abs(e_mixed), 1.0)
    assert abs(e_one - e_mixed) <= 1e-6 * scale, (e_one, e_mixed)
    assert abs(e_zero - e_mm) <= 1e-6 * scale, (e_zero, e_mm)
    assert abs(e_mixed - e_mm) > 1e-3  # the endpoints differ, so the test can tell them apart
    assert_forces_close(f_one, f_mixed, 1e-6)
    n = len(f_mm)  # openmm-ml >= 1.8 appends its link atoms (virtual sites) to the mixed systems
    assert_forces_close(f_zero[:n], f_mm, 1e-6)


def test_interpolate_uses_the_ml_region_charge(dipeptide_pdb, amber, tmp_path):
    """Dipeptide + Na+ (ML region charge +1) with a network whose charge embedding is not zero."""
    torch.manual_seed(SEED)
    model = E2FormerLSR(small_config()).eval()
    with torch.no_grad():
        model.charge_embedding.normal_()
    path = tmp_path / "charged.pt"
    save_checkpoint(model, str(path))
    modeller = app.Modeller(dipeptide_pdb.topology, dipeptide_pdb.positions)
    ion = app.Topology()
    residue = ion.addResidue("NA", ion.addChain())
    ion.addAtom("NA", app.Element.getBySymbol("Na"), residue)
    modeller.add(ion, [openmm.Vec3(0.8, 0.0, 0.0)] * unit.nanometer)
    mm_system = amber.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    ml_atoms = list(range(modeller.topology.getNumAtoms()))
    potential = MLPotential("e2former-lsr", modelPath=str(path))
    mixed = potential.createMixedSystem(modeller.topology, mm_system, ml_atoms, precision="double")
    interpolated = potential.createMixedSystem(
        modeller.topology, mm_system, ml_atoms, interpolate=True, precision="double"
    )
    e_mixed = evaluate_energy(mixed, modeller.positions)
    e_one = evaluate_energy(interpolated, modeller.positions, parameters={"lambda_interpolate": 1.0})
    assert abs(e_one - e_mixed) <= 1e-6 * max(abs(e_mixed), 1.0), (e_one, e_mixed)


@pytest.mark.parametrize("structure", ["dipeptide", "villin"])
def test_formal_charge_matches_force_field_charges(amber, structure, request):
    """The formal-charge fallback (used when openmm-ml passes an empty System) agrees with
    the rounded amber14 partial charges, an independent source; the capped dipeptide's
    NME methyl hydrogens (H1/H2/H3) must not count as an NH3+ terminus."""
    from openmmml_e2former.potential import formal_charge

    pdb = request.getfixturevalue(f"{structure}_pdb")
    system = amber.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    atoms = [a.index for a in pdb.topology.atoms() if a.residue.name != "HOH"]
    mm_total = sum(nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge) for i in atoms)
    assert formal_charge(pdb.topology, atoms) == round(mm_total)


# ------------------------------------------------------------------------- 5. bad input


def test_unsupported_element_is_named():
    assert 12 not in small_config().elements
    topology = app.Topology()
    chain = topology.addChain()
    residue = topology.addResidue("MG", chain)
    topology.addAtom("MG", app.Element.getBySymbol("Mg"), residue)
    water = topology.addResidue("HOH", chain)
    o = topology.addAtom("O", app.Element.getBySymbol("O"), water)
    h1 = topology.addAtom("H1", app.Element.getBySymbol("H"), water)
    h2 = topology.addAtom("H2", app.Element.getBySymbol("H"), water)
    topology.addBond(o, h1)
    topology.addBond(o, h2)
    with pytest.raises(ValueError, match="does not support the element") as info:
        lsr_potential().createSystem(topology)
    message = str(info.value)
    assert "Mg" in message and "atom 0" in message
    assert "atom 1" not in message  # the water is fine


def test_empty_ml_selection(dipeptide_pdb, amber):
    mm_system = amber.createSystem(dipeptide_pdb.topology, nonbondedMethod=app.NoCutoff)
    with pytest.raises(ValueError, match="empty"):
        lsr_potential().createMixedSystem(dipeptide_pdb.topology, mm_system, [])


@pytest.mark.parametrize(
    "name, edge_nm, ok",
    [
        ("e2former-lsr", 2.0, False),
        ("e2former-lsr", 3.7, True),
        ("e2former", 2.0, True),
        ("e2former", 0.9, False),
    ],
)
def test_box_too_small_for_cutoff(name, edge_nm, ok):
    pdb = load_dipeptide()
    pdb.topology.setPeriodicBoxVectors(cubic_box(edge_nm))
    potential = MLPotential(name, randomInit=True, seed=SEED)
    if ok:
        system = potential.createSystem(pdb.topology)
        assert ml_forces(system)[0].usesPeriodicBoundaryConditions()
        return
    need = "3.60" if name == "e2former-lsr" else "1.00"
    with pytest.raises(ValueError, match="box too small") as info:
        potential.createSystem(pdb.topology)
    assert need in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_positions_raise(dipeptide_pdb, backend):
    system = dipeptide_system(backend, "double")
    xyz = positions_nm(dipeptide_pdb.positions)
    xyz[5, 1] = np.nan
    with pytest.raises((openmm.OpenMMException, ValueError), match="NaN") as info:
        evaluate(system, xyz * unit.nanometer, "Reference")
    assert "5" in str(info.value)


def test_missing_checkpoint(dipeptide_pdb):
    with pytest.raises(ValueError, match="not found") as info:
        MLPotential("e2former-lsr", modelPath="/nonexistent.pt").createSystem(dipeptide_pdb.topology)
    assert "/nonexistent.pt" in str(info.value)


def test_corrupt_checkpoint(dipeptide_pdb, tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="corrupt") as info:
        MLPotential("e2former-lsr", modelPath=str(path)).createSystem(dipeptide_pdb.topology)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["e2former-lsr", "e2former"])
def test_no_weights_names_model_path(dipeptide_pdb, name, tmp_path, monkeypatch):
    """Without a shipped checkpoint (the lookup pointed at an empty folder) the error names modelPath."""
    import openmmml_e2former.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "potentials_dir", lambda: str(tmp_path))
    with pytest.raises(ValueError, match="modelPath"):
        MLPotential(name).createSystem(dipeptide_pdb.topology)


def test_default_weights_come_from_the_cache(dipeptide_pdb, tmp_path, monkeypatch):
    """Without modelPath and without shipped weights, <name>.pt in the weights cache is used,
    and the potential states what it loaded (file, energy unit)."""
    import openmmml_e2former.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "potentials_dir", lambda: str(tmp_path / "none"))
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("OPENMMML_E2FORMER_CACHE", str(cache))
    monkeypatch.setenv("OPENMMML_E2FORMER_OFFLINE", "1")
    save_checkpoint(seeded_network(long_range=False), str(cache / "e2former.pt"))
    potential = MLPotential("e2former")
    system = potential.createSystem(dipeptide_pdb.topology, precision="double")
    assert potential._impl.metadata["path"] == str(cache / "e2former.pt")
    assert potential._impl.metadata["energy_unit"] == "eV"
    expected, _ = network_reference(dipeptide_pdb.topology, dipeptide_pdb.positions, long_range=False)
    assert_energy_close(evaluate_energy(system, dipeptide_pdb.positions), expected, 1e-8)


def test_missing_default_weights_say_which_file_to_put_where(dipeptide_pdb, tmp_path, monkeypatch):
    import openmmml_e2former.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "potentials_dir", lambda: str(tmp_path / "none"))
    monkeypatch.setenv("OPENMMML_E2FORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENMMML_E2FORMER_OFFLINE", "1")
    with pytest.raises(ValueError) as info:
        MLPotential("e2former").createSystem(dipeptide_pdb.topology)
    assert str(tmp_path / "cache" / "e2former.pt") in str(info.value)
    assert "modelPath" in str(info.value)


def test_checkpoint_model_path_round_trip(dipeptide_pdb, dipeptide_reference, tmp_path):
    """A checkpoint of the seeded network, loaded through modelPath=, gives its energy."""
    path = tmp_path / "seeded.pt"
    torch.manual_seed(SEED)
    save_checkpoint(E2FormerLSR(small_config()).eval(), str(path))
    system = MLPotential("e2former-lsr", modelPath=str(path)).createSystem(
        dipeptide_pdb.topology, precision="double"
    )
    energy = evaluate_energy(system, dipeptide_pdb.positions)
    assert_energy_close(energy, dipeptide_reference[0], 1e-8)
    # the same long-range checkpoint must not pass for the local-only potential
    with pytest.raises(ValueError, match="e2former-lsr"):
        MLPotential("e2former", modelPath=str(path)).createSystem(dipeptide_pdb.topology)


# ------------------------------------------------------------------- 6. export round trip


def test_exported_module_in_fresh_process(dipeptide_pdb, dipeptide_reference, tmp_path):
    topology = dipeptide_pdb.topology
    numbers = [a.element.atomic_number for a in topology.atoms()]
    fragments = [int(f) for f in fragment_ids_from_topology(topology)]
    torch.manual_seed(SEED)
    module = OpenMMModule(E2FormerLSR(small_config()).eval(), numbers, fragments, dtype=torch.float64)
    path = tmp_path / "exported.pt"
    save_module(module, str(path))
    with torch.no_grad():
        in_process = float(module(torch.tensor(positions_nm(dipeptide_pdb.positions))))
    assert_energy_close(in_process, dipeptide_reference[0], 1e-10)

    script = textwrap.dedent(
        f"""
        import torch, openmmml_e2former, openmmtorch
        import openmm, openmm.app as app, openmm.unit as unit
        force = openmmtorch.TorchForce({str(path)!r})
        pdb = app.PDBFile({DIPEPTIDE_PDB!r})
        system = openmm.System()
        for atom in pdb.topology.atoms():
            system.addParticle(atom.element.mass)
        system.addForce(force)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                                 openmm.Platform.getPlatformByName('Reference'))
        context.setPositions(pdb.positions)
        energy = context.getState(getEnergy=True).getPotentialEnergy()
        print('ENERGY', repr(energy.value_in_unit(unit.kilojoule_per_mole)))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("ENERGY ")]
    assert len(lines) == 1, result.stdout
    assert_energy_close(float(lines[0].split()[1]), in_process, 1e-6)


# --------------------------------------------------------------------------- 7. link atoms


@pytest.fixture(scope="module")
def villin_link_system(amber, villin_pdb):
    modeller = villin_solute(villin_pdb)
    topology = modeller.topology
    assert topology.getNumAtoms() == 582
    mm_system = amber.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
    ml_atoms = [a.index for a in topology.atoms() if 10 <= a.residue.index <= 20]
    system = lsr_potential().createMixedSystem(
        topology, mm_system, ml_atoms, forceGroup=1, precision="double"
    )
    return topology, modeller.positions, mm_system, ml_atoms, system


def test_link_atoms_forces_are_minus_gradient(villin_link_system):
    topology, positions, _, ml_atoms, system = villin_link_system
    selected = set(ml_atoms)
    cuts = [
        (a.index, b.index) if a.index in selected else (b.index, a.index)
        for a, b in topology.bonds()
        if (a.index in selected) != (b.index in selected)
    ]
    assert len(cuts) == 2, cuts  # the two peptide bonds 9-10 and 20-21
    (force,) = ml_forces(system)
    assert force.getForceGroup() == 1
    assert [f.getName() for f in system.getForces() if f.getForceGroup() == 1] == [force.getName()]

    xyz = positions_nm(positions)
    energy, forces = evaluate(system, positions, groups={1})
    forces = forces[: len(xyz)]  # openmm-ml >= 1.8: its link atoms (virtual sites) come last
    assert math.isfinite(energy)
    # Only ML atoms and the MM atoms holding a link atom feel the ML force ...
    touched = selected | {mm for _, mm in cuts}
    untouched = [i for i in range(len(xyz)) if i not in touched]
    assert np.abs(forces[untouched]).max() == 0.0
    assert np.abs(forces[[mm for _, mm in cuts]]).max() > 0.0
    # ... and the ML energy is translation invariant, so its forces sum to zero.
    assert np.abs(forces.sum(axis=0)).max() <= 1e-8 * np.abs(forces).max() * len(touched)

    # Central finite differences for the MM atom of the first cut bond (its ML force comes
    # only through the link atom) and for the ML atom it is bonded to.  One Context for all
    # displaced geometries: from its 3rd call on it runs TorchScript's optimised graph.
    h = 1e-5
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )

    def group_energy(coordinates: np.ndarray) -> float:
        context.setPositions(with_sites(system, coordinates * unit.nanometer))
        context.computeVirtualSites()
        return context.getState(getEnergy=True, groups={1}).getPotentialEnergy().value_in_unit(KJ)

    for atom in cuts[0][::-1]:
        gradient = np.zeros(3)
        for k in range(3):
            plus, minus = xyz.copy(), xyz.copy()
            plus[atom, k] += h
            minus[atom, k] -= h
            gradient[k] = (group_energy(plus) - group_energy(minus)) / (2 * h)
        error = np.linalg.norm(forces[atom] + gradient)
        assert error <= 1e-4 * np.linalg.norm(forces[atom]), (atom, forces[atom], -gradient)
    assert group_energy(xyz) == pytest.approx(energy, rel=1e-10, abs=1e-8)


def test_link_atoms_false_refuses_cut_bonds(amber, villin_pdb):
    modeller = villin_solute(villin_pdb)
    topology = modeller.topology
    mm_system = amber.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
    ml_atoms = [a.index for a in topology.atoms() if 10 <= a.residue.index <= 20]
    with pytest.raises(ValueError, match="covalent bond"):
        lsr_potential().createMixedSystem(topology, mm_system, ml_atoms, linkAtoms=False)


# -------------------------------------------------------------------------------- 8. CUDA


def _cuda_platform():
    try:
        return openmm.Platform.getPlatformByName("CUDA")
    except Exception:  # OpenMMException: no such platform
        return None


def _cuda_ready():
    if _cuda_platform() is None or not torch.cuda.is_available():
        pytest.skip("needs the OpenMM CUDA platform and a CUDA device for PyTorch")


def _after_steps(system, positions, steps: int, platform: str = "CUDA"):
    """(positions nm, energy, forces) after ``steps`` Verlet steps on ``platform``."""
    integrator = openmm.VerletIntegrator(0.0002)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    try:
        context.setPositions(positions)
        integrator.step(steps)
        state = context.getState(getEnergy=True, getForces=True, getPositions=True)
        return (
            state.getPositions(asNumpy=True),
            state.getPotentialEnergy().value_in_unit(KJ),
            np.asarray(state.getForces(asNumpy=True).value_in_unit(KJ_NM)),
        )
    finally:
        del context


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["double", "single"])
def test_cuda_graphs_match_network_after_capture(dipeptide_pdb, precision):
    """useCUDAGraphs: after openmm-torch's 10 warm-up calls the step is a replayed graph; the
    energy and forces at the positions it reached equal the float64 network's there."""
    _cuda_ready()
    system = lsr_potential().createSystem(
        dipeptide_pdb.topology, precision=precision, backend="torchforce", useCUDAGraphs=True
    )
    positions, energy, forces = _after_steps(system, dipeptide_pdb.positions, 25)
    ref_energy, ref_forces = network_reference(dipeptide_pdb.topology, positions)
    tolerance = 1e-5 if precision == "double" else 2e-3
    assert_energy_close(energy, ref_energy, tolerance)
    assert_forces_close(forces, ref_forces, tolerance)


def _pythonforce_matches_network(pdb, device, platform, steps, tolerance, **options):
    """A double-precision Python-side-backend System on ``device`` equals the float64 network
    after ``steps`` Verlet steps on ``platform``."""
    system = lsr_potential().createSystem(
        pdb.topology, precision="double", backend="pythonforce", device=device, **options
    )
    assert any(isinstance(f, openmm.PythonForce) for f in system.getForces()), "no PythonForce"
    positions, energy, forces = _after_steps(system, pdb.positions, steps, platform=platform)
    ref_energy, ref_forces = network_reference(pdb.topology, positions)
    assert_energy_close(energy, ref_energy, tolerance)
    assert_forces_close(forces, ref_forces, tolerance)


@pytest.mark.gpu
@pytest.mark.parametrize("compile_module, recompute", [(False, False), (True, False), (False, True)])
def test_pythonforce_runs_network_on_cuda(dipeptide_pdb, compile_module, recompute):
    """The Python-side backend computes on the GPU (device='cuda'), eager, torch.compile'd
    (CUDA graphs through mode='reduce-overhead') or recomputing in the backward pass, and
    matches the float64 network."""
    _cuda_ready()
    _pythonforce_matches_network(
        dipeptide_pdb, "cuda", "CUDA", 5, 1e-5, compile=compile_module, recompute=recompute
    )


@pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("clang++")), reason="Inductor needs a C++ compiler on the CPU"
)
def test_pythonforce_compiled_and_recomputing_on_cpu_matches_network(dipeptide_pdb):
    """compile=True with recompute=True on the CPU (Inductor's generated C++, the setting
    docs/speed.md suggests for large ML regions there) gives the float64 network's energy and
    forces over a few steps, the first of which compiles."""
    _pythonforce_matches_network(dipeptide_pdb, "cpu", "CPU", 3, 1e-8, compile=True, recompute=True)


# ------------------------------------------------------------------------ 9. plug-in loading


def test_openmm_imported_before_torch_still_gets_torchforce_kernels(tmp_path):
    """`import openmm` first loads openmm-torch's plugins before libtorch is there; our plug-in
    must repair that, or the Context has no TorchForce kernels (a fresh process shows it)."""
    script = (
        "import openmm, openmm.app as app\n"
        "from openmmml import MLPotential\n"
        f"pdb = app.PDBFile({DIPEPTIDE_PDB!r})\n"
        "system = MLPotential('e2former-lsr', randomInit=True, seed=0).createSystem(pdb.topology)\n"
        "reference = openmm.Platform.getPlatformByName('Reference')\n"
        "ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), reference)\n"
        "ctx.setPositions(pdb.positions)\n"
        "print('ENERGY', ctx.getState(getEnergy=True).getPotentialEnergy())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "ENERGY" in result.stdout, result.stderr[-2000:]
    # openmmtorch 1.5 imports simtk.openmm, whose deprecation line is not the user's doing
    assert "simtk" not in result.stderr, result.stderr[-2000:]

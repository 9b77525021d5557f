"""What differs between the two tested stacks (README, "Install"): the pin (openmm 8.5.2,
openmm-ml 1.7, TorchForce by default) and the newest releases (openmm 8.6.1, openmm-ml 1.8,
the Python-side backend by default, openmm-ml's own link atoms). Every test runs on both;
the openmm-ml 1.8 ones are skipped on the pin (it has no link atoms) and run in CI's second
environment (``make test-latest``).
"""

from __future__ import annotations

import copy
from importlib.metadata import version

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch
from openmmml import MLPotential
from test_openmm import SEED, evaluate, load_dipeptide, villin_solute

from openmmml_e2former.caps import CAP_BOND_LENGTH
from openmmml_e2former.export import OpenMMModule, cut_bonds
from openmmml_e2former.fragments import fragment_ids_from_topology
from openmmml_e2former.model import E2FormerLSR, small_config
from openmmml_e2former.potential import default_backend, torchforce_cannot_be_copied

OPENMMML_18 = tuple(int(p) for p in version("openmmml").split(".")[:2]) >= (1, 8)
needs_openmmml_18 = pytest.mark.skipif(not OPENMMML_18, reason="openmm-ml < 1.8 has no link atoms")


def test_default_backend_survives_serialisation_and_copies():
    """The default backend is one whose System survives XmlSerializer and deepcopy (what the
    protocols and interpolation do) on this stack."""
    backend = default_backend()
    assert backend == ("pythonforce" if torchforce_cannot_be_copied() else "torchforce")
    pdb = load_dipeptide()
    system = MLPotential("e2former-lsr", randomInit=True, seed=SEED).createSystem(
        pdb.topology, precision="double"
    )
    names = [type(f).__name__ for f in system.getForces()]
    assert ("PythonForce" in names) == (backend == "pythonforce")
    energy = evaluate(system, pdb.positions)[0]
    restored = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    assert evaluate(restored, pdb.positions)[0] == pytest.approx(energy, rel=1e-12, abs=1e-9)
    assert evaluate(copy.deepcopy(system), pdb.positions)[0] == pytest.approx(energy, rel=1e-12, abs=1e-9)


def ml_group_energy(system, positions) -> float:
    return evaluate(system, positions, groups={1})[0]


def own_caps_energy(topology, positions, ml_atoms) -> float:
    """The seeded network with our own link atoms (caps inside the module), straight from the
    exported module: independent of openmm-ml's embedding."""
    torch.manual_seed(SEED)
    model = E2FormerLSR(small_config()).eval().double()
    numbers = [a.element.atomic_number for a in topology.atoms()]
    module = OpenMMModule(
        model,
        [numbers[i] for i in ml_atoms],
        fragment_ids_from_topology(topology, ml_atoms),
        0.0,
        ml_atoms,
        cut_bonds(topology, ml_atoms),
        False,
        torch.float64,
    )
    xyz = torch.tensor(np.asarray(positions.value_in_unit(unit.nanometer)), dtype=torch.float64)
    return float(module(xyz, None).detach())


@needs_openmmml_18
def test_openmmml_link_atoms_agree_with_ours(villin_pdb):
    """openmm-ml 1.8's link atoms (virtual sites it adds) and ours (caps inside the module)
    give the same energy when placed at the same distances; at openmm-ml's default distances
    (sums of covalent radii) the caps sit 0.02 A closer and the energy moves by a little."""
    modeller = villin_solute(villin_pdb)
    topology, positions = modeller.topology, modeller.positions
    amber = app.ForceField("amber14-all.xml")
    mm_system = amber.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
    ml_atoms = [a.index for a in topology.atoms() if 10 <= a.residue.index <= 20]
    cuts = cut_bonds(topology, ml_atoms)
    assert len(cuts) == 2
    numbers = [a.element.atomic_number for a in topology.atoms()]
    distances = [(ml, mm, CAP_BOND_LENGTH[numbers[ml]] * unit.angstrom) for ml, mm in cuts]
    potential = MLPotential("e2former-lsr", randomInit=True, seed=SEED)
    info = potential.createMixedSystem(
        topology,
        mm_system,
        ml_atoms,
        forceGroup=1,
        precision="double",
        linkAtomDistances=distances,
        returnInfo=True,
    )
    system, new_topology = info["system"], info["topology"]
    assert system.getNumParticles() == topology.getNumAtoms() + 2  # two virtual-site link atoms
    assert new_topology.getNumAtoms() == topology.getNumAtoms() + 2
    ours = own_caps_energy(topology, positions, ml_atoms)
    assert ml_group_energy(system, positions) == pytest.approx(ours, rel=1e-9, abs=1e-6)

    default = potential.createMixedSystem(topology, mm_system, ml_atoms, forceGroup=1, precision="double")
    shift = ml_group_energy(default, positions) - ours
    assert 1e-6 < abs(shift) < 5.0, shift  # kJ/mol, random network; docs/mixed-system.md


def test_protocol_mixed_system_keeps_caps_in_the_model(villin_pdb):
    """Protocols carry one Topology through every stage, so an ML region that cuts bonds keeps
    its caps inside the model on both stacks: no extra particles, the ML energy of our own
    caps, and (openmm-ml 1.8) the same MM part as openmm-ml's own mechanical embedding."""
    from openmmml_e2former.simulate.system import build_mixed_system

    modeller = villin_solute(villin_pdb)
    topology, positions = modeller.topology, modeller.positions
    mm_system = app.ForceField("amber14-all.xml").createSystem(topology, nonbondedMethod=app.NoCutoff)
    ml_atoms = [a.index for a in topology.atoms() if 10 <= a.residue.index <= 20]
    potential = {"name": "e2former-lsr", "randomInit": "true", "seed": SEED, "precision": "double"}
    system = build_mixed_system(topology, mm_system, ml_atoms, potential, True)
    assert system.getNumParticles() == topology.getNumAtoms()
    ml = [f for f in system.getForces() if type(f).__name__ in ("Force", "PythonForce")]
    assert len(ml) == 1
    ml[0].setForceGroup(1)
    assert ml_group_energy(system, positions) == pytest.approx(
        own_caps_energy(topology, positions, ml_atoms), rel=1e-9, abs=1e-6
    )
    if OPENMMML_18:
        reference = MLPotential("e2former-lsr", randomInit=True, seed=SEED).createMixedSystem(
            topology, mm_system, ml_atoms, forceGroup=1, removeConstraints=False
        )
        assert evaluate(system, positions, groups={0})[0] == pytest.approx(
            evaluate(reference, positions, groups={0})[0], rel=1e-9, abs=1e-6
        )


def test_protocols_refuse_a_torchforce_they_could_not_copy():
    from openmmml_e2former.simulate.system import check_backend_for_protocols

    if torchforce_cannot_be_copied():
        with pytest.raises(ValueError, match="pythonforce"):
            check_backend_for_protocols("torchforce")
    else:
        check_backend_for_protocols("torchforce")  # the pin: protocols use it by default
    check_backend_for_protocols("pythonforce")
    check_backend_for_protocols(None)

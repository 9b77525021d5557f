"""Shared builders for network tests: random molecules and small seeded models."""

import os

import numpy as np
import torch

from openmmml_e2former.model import E2FormerLSR, small_config

ELEMENTS = [1, 6, 7, 8, 16]


def random_molecule(n_atoms=24, n_fragments=4, spread=6.0, seed=0, min_distance=1.0):
    """Random positions (Angstrom, float64) with a minimum pair distance, random elements,
    and fragments made of consecutive atoms."""
    rng = np.random.default_rng(seed)
    points = []
    while len(points) < n_atoms:
        p = rng.uniform(-spread, spread, size=3)
        if all(np.linalg.norm(p - q) >= min_distance for q in points):
            points.append(p)
    numbers = rng.choice(ELEMENTS, size=n_atoms)
    fragments = np.repeat(np.arange(n_fragments), int(np.ceil(n_atoms / n_fragments)))[:n_atoms]
    return (
        torch.tensor(np.array(points), dtype=torch.float64),
        torch.tensor(numbers, dtype=torch.long),
        torch.tensor(fragments, dtype=torch.long),
    )


def seeded_model(dtype=torch.float64, seed=0, **changes):
    torch.manual_seed(seed)
    model = E2FormerLSR(small_config(**changes)).to(dtype).eval()
    # random reference energies and charge embedding so those paths are exercised too
    with torch.no_grad():
        model.charge_embedding.normal_(0.0, 0.1)
    return model


def energy_forces(model, positions, numbers, fragments, box=None, charge=0.0):
    positions = positions.clone().requires_grad_(True)
    energy = model(positions, numbers, fragments, torch.tensor(charge), box, None)
    (grad,) = torch.autograd.grad(energy, positions)
    return energy.detach(), -grad


def villin_protein():
    """Villin headpiece protein atoms from OpenMM's test.pdb: (positions Angstrom, Z, fragment ids)."""
    import openmm.app as app

    from openmmml_e2former.fragments import fragment_ids_from_topology

    pdb = app.PDBFile(os.path.join(os.path.dirname(app.__file__), "data", "test.pdb"))
    atoms = [a for a in pdb.topology.atoms() if a.residue.name not in ("HOH", "Cl", "CL", "NA", "Na")]
    indices = [a.index for a in atoms]
    xyz = np.array(
        pdb.getPositions(asNumpy=True).value_in_unit(app.PDBFile.__init__.__globals__["nanometers"])
    )
    positions = torch.tensor(xyz[indices] * 10.0, dtype=torch.float64)
    numbers = torch.tensor([a.element.atomic_number for a in atoms], dtype=torch.long)
    fragments = torch.tensor(fragment_ids_from_topology(pdb.topology, indices), dtype=torch.long)
    return positions, numbers, fragments

"""Shared builders for network tests: random molecules, seeded models, the reference
fixture's molecule and the OpenMM platforms to run on (fixtures are in conftest.py)."""

import os

import numpy as np
import pytest
import torch

from openmmml_e2former.model import PRESETS, E2FormerLSR

#: the authors' reference fixture (tests/fixtures/PROVENANCE.md)
REFERENCE_FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "ubio-e2former-lsr")

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


def seeded_model(dtype=torch.float64, seed=0, preset="small", **changes):
    """A random network of a preset size (model/config.py PRESETS) with config ``changes``."""
    torch.manual_seed(seed)
    model = E2FormerLSR(PRESETS[preset](**changes)).to(dtype).eval()
    # random reference energies and charge embedding so those paths are exercised too
    with torch.no_grad():
        model.charge_embedding.normal_(0.0, 0.1)
    return model


def energy_forces(model, positions, numbers, fragments, box=None, charge=0.0):
    positions = positions.clone().requires_grad_(True)
    energy = model(positions, numbers, fragments, torch.tensor(charge), box, None)
    (grad,) = torch.autograd.grad(energy, positions)
    return energy.detach(), -grad


def villin_pdb_path() -> str:
    """OpenMM's ``app/data/test.pdb``: villin headpiece (582 atoms), 2 Cl-, water (8867 atoms)."""
    import openmm.app as app

    return os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")


def reference_fixture_molecule(name="mol1.npz"):
    """(positions Angstrom float64, atomic numbers, fragment ids, total charge) of a molecule
    of the reference fixture."""
    data = np.load(os.path.join(REFERENCE_FIXTURE, name))
    return (
        torch.tensor(data["positions"], dtype=torch.float64),
        torch.tensor(data["atomic_numbers"], dtype=torch.long),
        torch.tensor(data["cluster_ids"], dtype=torch.long),
        float(data["charge"]),
    )


def openmm_platforms():
    """Every OpenMM platform this machine has, as pytest params; those other than Reference
    and CPU (CUDA, OpenCL, HIP) are marked ``gpu``."""
    import openmm

    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    return [
        pytest.param(name, marks=() if name in ("Reference", "CPU") else pytest.mark.gpu) for name in names
    ]

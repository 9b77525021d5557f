"""One hydrogen-cap rule (caps.py) for training data and simulation.

The data generator once capped cut C-N bonds at 1.10 Å while the OpenMM module used 1.09 Å:
a network trained on one geometry and run on another. Both now call ``caps.cap_positions``;
this test compares the two end to end and checks the geometry against the stated lengths.
"""

from __future__ import annotations

import numpy as np
import openmm.unit as unit
import pytest
import torch

from openmmml_e2former.caps import CAP_BOND_LENGTH
from openmmml_e2former.data.generators import cut_window
from openmmml_e2former.export import OpenMMModule, cut_bonds
from openmmml_e2former.model import E2FormerLSR, small_config


def test_training_windows_and_the_openmm_module_place_caps_alike(villin_pdb):
    pdb = villin_pdb
    topology = pdb.topology
    angstrom = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
    residues = list(topology.residues())[4:8]  # four residues inside the chain: two cut bonds
    charges = np.zeros(topology.getNumAtoms())
    numbers, coords, _, _ = cut_window(topology, angstrom, residues, charges)
    inside = sorted(a.index for r in residues for a in r.atoms())
    caps_data = coords[len(inside) :]

    pairs = cut_bonds(topology, inside)
    assert len(pairs) == 2 and len(caps_data) == 2
    z = [a.element.atomic_number for a in topology.atoms()]
    module = OpenMMModule(
        E2FormerLSR(small_config()).double(),
        [z[i] for i in inside],
        [0] * len(inside),
        0.0,
        inside,
        pairs,
        False,
        torch.float64,
    )
    coords_md, _ = module.coordinates(torch.tensor(angstrom / 10.0), None)
    caps_md = coords_md[len(inside) :].numpy()
    # the same caps in the same order (bond order of the topology)
    np.testing.assert_allclose(caps_md, caps_data, rtol=0, atol=1e-12)
    # on the cut bond, at the stated distance from the kept atom
    for (kept, gone), cap in zip(pairs, caps_md, strict=True):
        bond = angstrom[gone] - angstrom[kept]
        offset = cap - angstrom[kept]
        assert np.linalg.norm(offset) == pytest.approx(CAP_BOND_LENGTH[z[kept]], abs=1e-12)
        assert np.linalg.norm(np.cross(offset, bond)) == pytest.approx(0.0, abs=1e-9)

"""The padding chosen for a minimum box edge, checked against what OpenMM's Modeller builds
with it for each box shape (the model needs every diagonal element >= twice its cutoff)."""

from __future__ import annotations

import os

import pytest

from openmmml_e2former.simulate.prepare import padding_for_minimum_box

DATA = os.path.join(os.path.dirname(__file__), "data", "ace_ala_nme.pdb")


@pytest.mark.parametrize("shape", ["cube", "dodecahedron", "octahedron"])
def test_modeller_box_meets_the_minimum(shape):
    import openmm.app as app
    import openmm.unit as unit

    pdb = app.PDBFile(DATA)
    positions = pdb.getPositions().value_in_unit(unit.nanometer)
    minimum = 3.78
    padding = padding_for_minimum_box(positions, 0.8, minimum, shape)
    assert padding > 0.8  # a dipeptide with 0.8 nm padding gets a far smaller box
    modeller = app.Modeller(pdb.topology, pdb.positions)
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
    modeller.addSolvent(forcefield, padding=padding * unit.nanometer, boxShape=shape)
    vectors = modeller.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
    diagonal = [vectors[k][k] for k in range(3)]
    assert min(diagonal) >= minimum
    assert min(diagonal) < minimum + 0.01  # raised just enough, not more


def test_padding_that_already_fits_is_kept():
    import numpy as np

    line = np.stack([np.linspace(0, 4.0, 20), np.zeros(20), np.zeros(20)], axis=1)  # 4 nm long
    assert padding_for_minimum_box(line, 1.0, 3.78, "cube") == 1.0
    assert padding_for_minimum_box(line, 1.0, 0.0, "cube") == 1.0

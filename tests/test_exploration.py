"""Active-learning helpers: broken-bond detection, ML-driven MD frames, and extending a split."""

from __future__ import annotations

import numpy as np
import pytest

from openmmml_e2former.data.exploration import BROKEN, bond_pairs, broken_bonds, explore_molecule
from openmmml_e2former.data.splits import extend_split, split_by_molecule
from openmmml_e2former.data.structure import Structure


@pytest.fixture(scope="module")
def dipeptide():
    from openmmml_e2former.data.peptides import build_capped_peptide

    return build_capped_peptide(["ALA"])


def _stretch(positions, i, j, factor):
    """Move atom j along the i-j axis so that the bond becomes ``factor`` times as long."""
    out = positions.copy()
    out[j] = positions[i] + factor * (positions[j] - positions[i])
    return out


def test_broken_bonds_are_those_changed_by_more_than_the_threshold(dipeptide):
    topology, positions = dipeptide
    pairs = bond_pairs(topology)
    assert len(pairs) == topology.getNumBonds()
    atoms = list(topology.atoms())
    i, j = next((a, b) for a, b in pairs if atoms[b].element.symbol == "H" and atoms[a].name == "CA")
    assert broken_bonds(topology, positions, positions) == []
    assert broken_bonds(topology, _stretch(positions, i, j, 1 + BROKEN - 0.05), positions) == []
    names = broken_bonds(topology, _stretch(positions, i, j, 1 + BROKEN + 0.05), positions)
    assert names == [f"ALA2-CA - ALA2-{atoms[j].name}"]
    assert broken_bonds(topology, _stretch(positions, i, j, 1 - BROKEN - 0.05), positions) == names


def test_ml_driven_md_gives_labelled_frames_of_the_molecule(dipeptide):
    from openmmml import MLPotential

    topology, positions = dipeptide
    potential = MLPotential("e2former-lsr")
    structures, record = explore_molecule(
        potential, topology, positions, "ACE-ALA-NME", 0, num_frames=3, interval=5, temperature=300.0
    )
    assert record["steps"] == 15 and record["frames"] == 3 and record["finite"]
    assert [s.id for s in structures] == [f"ACE-ALA-NME/mlmd300/{k}" for k in range(3)]
    assert all(s.molecule == "ACE-ALA-NME" and s.num_atoms == topology.getNumAtoms() for s in structures)
    moved = [np.abs(s.positions - positions).max() for s in structures]
    assert 0.01 < min(moved) and max(moved) < 1.0  # MD moved the atoms, a little, in Å
    assert record["first_broken_frame"] is None  # 15 fs at 300 K with the shipped potential


def _structure(identifier: str, molecule: str) -> Structure:
    return Structure(identifier, molecule, [1, 1], [[0, 0, 0], [0, 0, 0.74]], [0, 0])


def test_extended_split_keeps_each_molecule_on_its_side():
    old = [_structure(f"{m}/{k}", m) for m in "abcdefghij" for k in range(3)]
    split = split_by_molecule(old, (0.6, 0.2, 0.2), seed=1)
    side = {i: name for name, ids in split.items() for i in ids}
    new = [_structure(f"{m}/new", m) for m in "abcdefghij"] + [_structure("k/0", "k+water")]
    sides = extend_split(split, old, new)
    for name, items in sides.items():
        for s in items:
            assert s.molecule == "k+water" and name == "train" or side[f"{s.molecule}/0"] == name
    assert sum(len(v) for v in sides.values()) == len(new)
    assert {s.id for s in sides["test"]}  # some new structures join held-out molecules
    with pytest.raises(ValueError, match="already in the split"):
        extend_split(split, old, [_structure("a/0", "a")])
    with pytest.raises(ValueError, match="repeat ids"):
        extend_split(split, old, [_structure("a/new", "a"), _structure("a/new", "a")])


def test_windows_of_the_failed_stability_run_show_its_broken_bond():
    """The stage-1 villin run (committed) had ARG14's HE move onto CZ at ~7 ps (frame 13 of its
    0.5 ps frames); the window around ARG14 cut from a later frame holds that geometry, with the
    cut bonds capped and the window's formal charge."""
    import os

    from openmmml_e2former.data.exploration import run_folder_windows

    folder = os.path.join(os.path.dirname(__file__), "..", "stability", "villin-20ps-stage1-run")
    windows = run_folder_windows(folder, window=3, tag="stage1")
    assert len(windows) == 18 * 33
    with pytest.raises(ValueError, match="no stage 'heat'"):
        run_folder_windows(folder, stage="heat")
    late = next(s for s in windows if s.id == "villin:13-15/stage1/f16")
    early = next(s for s in windows if s.id == "villin:13-15/stage1/f4")

    def hydrogens_on_guanidinium_carbon(structure):
        """H atoms within 1.2 Å of a carbon bonded to three nitrogens (ARG's CZ)."""
        d = np.linalg.norm(structure.positions[:, None] - structure.positions[None], axis=-1)
        n = structure.numbers
        cz = [c for c in np.flatnonzero(n == 6) if (d[c, n == 7] < 1.6).sum() == 3]
        assert len(cz) == 1  # one arginine in the window
        return [h for h in np.flatnonzero(n == 1) if d[h, cz[0]] < 1.2]

    assert hydrogens_on_guanidinium_carbon(early) == []
    assert len(hydrogens_on_guanidinium_carbon(late)) == 1
    # residues 13-15 of villin are THR-ARG-SER: charge +1 (the arginine)
    assert late.charge == early.charge == 1 and late.num_atoms == early.num_atoms


def test_explorations_start_from_a_relaxed_geometry():
    """The builder's proline ring is strained (why round 1's proline explorations broke bonds);
    ``minimized`` relaxes it with AMBER14: OpenMM's own energy before and after."""
    import openmm
    import openmm.app as app

    from openmmml_e2former.data.peptides import build_capped_peptide
    from openmmml_e2former.data.sampling import minimized

    topology, positions = build_capped_peptide(["PRO"])
    system = app.ForceField("amber14-all.xml").createSystem(topology, nonbondedMethod=app.NoCutoff)
    reference = openmm.Platform.getPlatformByName("Reference")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), reference)

    def energy(xyz):
        context.setPositions(xyz * 0.1)
        return context.getState(getEnergy=True).getPotentialEnergy()._value  # kJ/mol

    relaxed = minimized(topology, positions)
    assert energy(positions) > 1000.0 and energy(relaxed) < 0.0
    assert broken_bonds(topology, relaxed, positions) == []  # relaxed, not rebuilt

"""Pieces of an ML/MM run's frames with their first water shell (data/pieces.py:
solvated_run_pieces), checked against the frame itself with mdtraj's minimum-image distances."""

import os
import shutil
import sys

import numpy as np
import pytest

from openmmml_e2former.chemistry import formal_charge
from openmmml_e2former.data import pieces as pc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "stability", "villin-20ps-hcons-run")
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import stability_records  # noqa: E402

mdtraj = pytest.importorskip("mdtraj")
FRAME = 39


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "villin-20ps-hcons-run"
    shutil.copytree(RUN, folder, ignore=shutil.ignore_patterns("*.dcd", "*.xml", "*.chk", "*.pdb"))
    stability_records.unpack(str(folder))
    return str(folder)


def test_pieces_hold_their_residues_and_every_water_of_the_first_shell(run):
    radius = 3.5
    pieces = pc.solvated_run_pieces(
        run, "villin", [FRAME], spheres=1, segments=1, water_radius=radius, seed=1
    )
    assert [p.id.split(":")[0] for p in pieces] == ["villin-water-sphere", "villin-water-segment"]
    frame = mdtraj.load_frame(os.path.join(run, "stages", "02-nvt", "trajectory.dcd"), FRAME,
                              top=os.path.join(run, "prepared.pdb"))  # fmt: skip
    top = frame.topology
    xyz = frame.xyz[0] * 10.0
    box = frame.unitcell_lengths[0] * 10.0
    oxygens = [r.atom(0).index for r in top.residues if r.is_water]
    assert all(top.atom(i).element.symbol == "O" for i in oxygens)
    for p in pieces:
        assert p.num_atoms <= 650 and p.molecule == "villin-water" and p.energy is None
        # the waters come last, as O H H; each one whole in the piece's coordinates
        n_water = 0
        while p.numbers[p.num_atoms - 3 * (n_water + 1)] == 8 and list(
            p.numbers[p.num_atoms - 3 * (n_water + 1) + 1 : p.num_atoms - 3 * n_water]
        ) == [1, 1]:
            n_water += 1
        solute = p.positions[: p.num_atoms - 3 * n_water]
        water = p.positions[p.num_atoms - 3 * n_water :].reshape(-1, 3, 3)
        bonds = np.linalg.norm(water[:, 1:] - water[:, :1], axis=2)
        assert np.all((bonds > 0.85) & (bonds < 1.15))
        # the protein residues held whole: every atom found at its place in the frame (modulo the box)
        kept_atoms = []
        for residue in top.residues:
            if residue.is_protein:
                atoms = [a.index for a in residue.atoms]
                delta = xyz[atoms][:, None, :] - solute[None, :, :]
                delta -= np.round(delta / box) * box
                if np.all(np.linalg.norm(delta, axis=2).min(axis=1) < 1e-3):
                    kept_atoms += atoms
        assert len(kept_atoms) > 100
        # every water whose oxygen's nearest image lies within the radius of an atom of the piece
        # (its caps included), and no other
        delta = xyz[oxygens][:, None, :] - solute[None, :, :]
        delta -= np.round(delta / box) * box
        expected = int((np.linalg.norm(delta, axis=2).min(axis=1) <= radius).sum())
        assert n_water == expected
        # ... at the image next to the piece
        near = np.linalg.norm(water[:, 0][:, None] - solute[None], axis=2).min(axis=1)
        assert np.all(near <= radius + 1e-4)
        # the charge is the residue rule's for the protein atoms (waters are neutral)
        assert p.charge == formal_charge(top.to_openmm(), kept_atoms)


def test_round_5_data_are_reproduced(monkeypatch):
    """The labelled round-5 part (datasets/README.md) is what make_dataset.py's part makes."""
    import make_dataset

    monkeypatch.chdir(ROOT)  # the part's run folder is a path from the repository root

    from openmmml_e2former.data.extxyz import read_structures

    made = make_dataset.villin_water_pieces()
    kept = read_structures(
        os.path.join(ROOT, "datasets", "labelling", "raw", "villin-water-pieces.extxyz.gz")
    )
    assert [s.id for s in made] == [s.id for s in kept] and len(kept) == 30
    for a, b in zip(made, kept, strict=True):
        assert a.charge == b.charge
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_array_equal(a.fragment_ids, b.fragment_ids)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-5)


def test_bad_frames_and_packed_folders_are_named(run, tmp_path):
    with pytest.raises(ValueError, match="frame 99 does not exist"):
        pc.solvated_run_pieces(run, "villin", [99])
    with pytest.raises(ValueError, match="repeat a frame"):
        pc.solvated_run_pieces(run, "villin", [3, 3])
    packed = tmp_path / "packed-run"
    shutil.copytree(RUN, packed, ignore=shutil.ignore_patterns("*.dcd", "*.xml", "*.chk", "*.pdb"))
    with pytest.raises(FileNotFoundError, match="stability_records.py unpack"):
        pc.solvated_run_pieces(str(packed), "villin", [3])

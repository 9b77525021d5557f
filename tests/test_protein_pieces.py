"""Protein-size training pieces (data/pieces.py: protein_pieces): capped spheres and segments
of other proteins, of the requested size, with the charge of the residues they hold."""

import numpy as np
import pytest

from openmmml_e2former.chemistry import formal_charge
from openmmml_e2former.data import generators as g
from openmmml_e2former.data import pieces as pc
from openmmml_e2former.data import scaling

pytest.importorskip("openmmforcefields")


@pytest.fixture(scope="module")
def mcl1():
    return g.protein_for_md(pc.piece_protein_path("MCL1"))


def test_pieces_have_the_size_and_charge_of_their_residues(mcl1):
    top, pos = mcl1
    residues = list(top.residues())
    charged = [r.index for r in residues if r.name in ("LYS", "ARG", "ASP", "GLU")]
    rng = np.random.default_rng(3)
    oracle = scaling.AmberOracle()
    for kind, target in (("sphere", 300), ("segment", 200), ("sphere", 550)):
        keep = pc._piece_of_size(top, pos, kind, target, rng, charged)
        inside = sum(len(list(residues[i].atoms())) for i in keep)
        without_last = inside - len(list(residues[keep[-1]].atoms()))
        assert inside >= target
        if kind == "segment":
            assert keep == list(range(keep[0], keep[-1] + 1))  # contiguous
            assert without_last < target or without_last - len(list(residues[keep[0]].atoms())) < target
        piece, xyz = scaling.capped_piece(top, pos, keep)
        # a single residue between two kept ones is filled in (residue_runs)
        atoms = [a.index for run in scaling.residue_runs(top, keep) for r in run for a in r.atoms()]
        # AMBER14's total charge of the capped piece = the residue rule's charge of what it holds
        assert oracle.charge(piece) == formal_charge(top, atoms)
        # every kept atom is where it was in the protein (caps add atoms, move none)
        caps = ("ACE", "NME")
        kept = {(a.residue.id, a.name): xyz[a.index] for a in piece.atoms() if a.residue.name not in caps}
        for i in keep:
            for a in residues[i].atoms():
                np.testing.assert_allclose(kept[(a.residue.id, a.name)], pos[a.index])


def test_protein_pieces_within_bounds_unique_and_labelled_by_protein():
    path = pc.piece_protein_path("MCL1")
    pieces = pc.protein_pieces(path, "MCL1", num_frames=1, spheres=2, segments=1, atoms=(150, 400))
    assert [p.id.split(":")[0] for p in pieces] == ["MCL1-sphere", "MCL1-sphere", "MCL1-segment"]
    assert len({p.id for p in pieces}) == 3
    for p in pieces:
        assert 150 <= p.num_atoms <= 400 and p.molecule == "MCL1" and p.energy is None
        assert len(p.fragment_ids) == p.num_atoms == len(p.numbers)


def test_unknown_protein_is_named():
    with pytest.raises(ValueError, match="unknown protein 'XYZ'"):
        pc.piece_protein_path("XYZ")


def test_caps_a_prepared_protein_already_has_join_the_piece():
    top, _ = g.protein_for_md(pc.piece_protein_path("PTP1B"))  # chain breaks capped with ACE/NME
    residues = list(top.residues())
    nme = next(r.index for r in residues if r.name == "NME")
    assert pc._with_existing_caps(residues, [nme - 2, nme - 1]) == [nme - 2, nme - 1, nme]
    assert pc._with_existing_caps(residues, [nme]) == [nme - 1, nme]  # a cap alone is no molecule
    pieces = pc.protein_pieces(pc.piece_protein_path("PTP1B"), "PTP1B", num_frames=1, spheres=4, segments=4)
    assert len(pieces) == 8 and all(150 <= p.num_atoms <= 600 for p in pieces)

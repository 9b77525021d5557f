"""Tests for openmmml_e2former.fragments (topology -> fragment ids)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import openmm.app as app
import pytest

from openmmml_e2former.fragments import (
    fragment_ids_from_topology,
    normalize_fragment_ids,
    validate_fragment_ids,
)

# Counted independently of the module under test: test.pdb holds villin,
# HOH waters and two Cl ions.
WATER_NAMES = {"HOH"}
ION_NAMES = {"Cl", "CL"}


@pytest.fixture(scope="module")
def villin(villin_pdb) -> app.Topology:
    return villin_pdb.topology


@pytest.fixture(scope="module")
def capped(dipeptide_pdb) -> app.Topology:
    return dipeptide_pdb.topology


def atoms_by_fragment(ids: np.ndarray, atom_indices) -> dict[int, set[int]]:
    groups: dict[int, set[int]] = defaultdict(set)
    for fragment, atom in zip(ids.tolist(), atom_indices, strict=True):
        groups[fragment].add(atom)
    return groups


def assert_one_fragment_per_residue(ids, atom_indices, residues):
    """Each residue's atoms share an id, and no two residues share one."""
    position = {atom: i for i, atom in enumerate(atom_indices)}
    seen = set()
    for residue in residues:
        residue_ids = {int(ids[position[a.index]]) for a in residue.atoms()}
        assert len(residue_ids) == 1, f"residue {residue} split over {residue_ids}"
        assert not residue_ids & seen, f"residue {residue} shares a fragment"
        seen |= residue_ids


def assert_contiguous_first_appearance(ids: np.ndarray):
    assert ids.dtype == np.int64
    first = list(dict.fromkeys(ids.tolist()))
    assert first == list(range(len(first)))


# --------------------------------------------------------------------------- #
# Villin headpiece in water (OpenMM's test.pdb)
# --------------------------------------------------------------------------- #


def test_villin_protein_residue_is_one_fragment(villin):
    protein = [r for r in villin.residues() if r.name not in WATER_NAMES | ION_NAMES]
    protein_atoms = [a.index for r in protein for a in r.atoms()]
    assert len(protein_atoms) == 582

    ids = fragment_ids_from_topology(villin, atoms=protein_atoms)

    assert ids.shape == (len(protein_atoms),)
    assert len(np.unique(ids)) == len(protein)
    assert_one_fragment_per_residue(ids, protein_atoms, protein)
    assert_contiguous_first_appearance(ids)


def test_villin_whole_system(villin):
    ids = fragment_ids_from_topology(villin)
    residues = list(villin.residues())

    assert ids.shape == (villin.getNumAtoms(),)
    assert_contiguous_first_appearance(ids)
    # Every residue (protein, water, ion) is exactly one fragment here.
    assert ids.max() + 1 == len(residues)
    assert_one_fragment_per_residue(ids, range(villin.getNumAtoms()), residues)

    waters = [r for r in residues if r.name in WATER_NAMES]
    ions = [r for r in residues if r.name in ION_NAMES]
    assert len(waters) > 2000 and len(ions) == 2
    for water in waters:
        assert len({int(ids[a.index]) for a in water.atoms()}) == 1
    ion_ids = [int(ids[a.index]) for r in ions for a in r.atoms()]
    assert len(set(ion_ids)) == len(ion_ids) == 2
    for ion_id in ion_ids:
        assert np.count_nonzero(ids == ion_id) == 1


def test_subset_follows_given_order(villin):
    atoms = list(villin.atoms())
    water = [r for r in villin.residues() if r.name in WATER_NAMES][0]
    water_atoms = [a.index for a in water.atoms()]
    # water first, then the first residue's atoms in reverse order
    first_residue = [a.index for a in next(villin.residues()).atoms()][::-1]
    selection = water_atoms + first_residue + [atoms[-1].index]

    ids = fragment_ids_from_topology(villin, atoms=selection)

    expected = [0] * len(water_atoms) + [1] * len(first_residue) + [2]
    assert ids.tolist() == expected


def test_subset_of_a_residue_keeps_it_together(villin):
    residue = list(villin.residues())[3]
    some_atoms = [a.index for a in residue.atoms()][:4]
    ids = fragment_ids_from_topology(villin, atoms=np.array(some_atoms))
    assert ids.tolist() == [0, 0, 0, 0]


# --------------------------------------------------------------------------- #
# Capped peptide ACE-ALA-ALA-NME
# --------------------------------------------------------------------------- #


def test_caps_merge_into_their_residue(capped):
    residues = list(capped.residues())
    assert [r.name for r in residues] == ["ACE", "ALA", "ALA", "NME"]

    ids = fragment_ids_from_topology(capped)

    by_residue = [{int(ids[a.index]) for a in r.atoms()} for r in residues]
    assert by_residue == [{0}, {0}, {1}, {1}]
    assert_contiguous_first_appearance(ids)


def test_caps_without_bonds_merge_by_chain_order(capped):
    """A topology that lost its inter-residue bonds still merges the caps."""
    topology = copy_topology(capped, keep_bond=lambda a, b: a.residue is b.residue)
    ids = fragment_ids_from_topology(topology)
    by_residue = [{int(ids[a.index]) for a in r.atoms()} for r in topology.residues()]
    assert by_residue == [{0}, {0}, {1}, {1}]


def test_caps_alone_in_selection(capped):
    ace = [a.index for a in next(capped.residues()).atoms()]
    ids = fragment_ids_from_topology(capped, atoms=ace)
    assert ids.tolist() == [0] * len(ace)


# --------------------------------------------------------------------------- #
# Ligands, covalent ligands, large residues, ions (hand-built topologies)
# --------------------------------------------------------------------------- #


def copy_topology(source: app.Topology, keep_bond=lambda a, b: True) -> app.Topology:
    """A copy of a topology, keeping only the bonds ``keep_bond`` accepts."""
    topology = app.Topology()
    new_atoms = {}
    for chain in source.chains():
        new_chain = topology.addChain(chain.id)
        for residue in chain.residues():
            new_residue = topology.addResidue(residue.name, new_chain, residue.id)
            for atom in residue.atoms():
                new_atoms[atom.index] = topology.addAtom(atom.name, atom.element, new_residue)
    for a, b in source.bonds():
        if keep_bond(a, b):
            topology.addBond(new_atoms[a.index], new_atoms[b.index])
    return topology


def add_residue(topology, chain, name, atom_specs, bonds=()):
    """Add a residue of ``(atom name, element symbol)`` atoms and intra-residue bonds."""
    residue = topology.addResidue(name, chain)
    atoms = [
        topology.addAtom(atom_name, app.Element.getBySymbol(symbol), residue)
        for atom_name, symbol in atom_specs
    ]
    for i, j in bonds:
        topology.addBond(atoms[i], atoms[j])
    return atoms


def carbon_chain(n: int, offset: int = 0) -> tuple[list, list]:
    """Atom specs and bonds of a linear chain of n carbons."""
    specs = [(f"C{offset + i}", "C") for i in range(n)]
    bonds = [(offset + i, offset + i + 1) for i in range(n - 1)]
    return specs, bonds


def test_covalent_ligand_stays_separate(capped):
    topology = copy_topology(capped)
    chain = topology.addChain("L")
    ligand = add_residue(topology, chain, "LIG", [("C1", "C"), ("O1", "O")], [(0, 1)])
    cb = next(a for a in topology.atoms() if a.name == "CB")
    topology.addBond(cb, ligand[0])

    ids = fragment_ids_from_topology(topology)

    ligand_ids = {int(ids[a.index]) for a in ligand}
    assert ligand_ids == {2}
    assert ids.max() == 2


def test_covalent_link_between_residues_not_merged():
    """Residues joined by a bond that is not a peptide/phosphodiester link stay apart."""
    topology = app.Topology()
    chain = topology.addChain()
    cys1 = add_residue(topology, chain, "CYX", [("N", "N"), ("CA", "C"), ("SG", "S")])
    cys2 = add_residue(topology, chain, "CYX", [("N", "N"), ("CA", "C"), ("SG", "S")])
    topology.addBond(cys1[2], cys2[2])
    assert fragment_ids_from_topology(topology).tolist() == [0, 0, 0, 1, 1, 1]


def test_large_ligand_split_by_connected_components():
    topology = app.Topology()
    chain = topology.addChain()
    specs_a, bonds_a = carbon_chain(35)
    specs_b, bonds_b = carbon_chain(35, offset=35)
    hydrogen = [("H1", "H")]
    atoms = add_residue(topology, chain, "BIG", specs_a + specs_b + hydrogen, bonds_a + bonds_b + [(69, 70)])
    ids = fragment_ids_from_topology(topology)
    assert len(atoms) == 71
    assert ids.tolist() == [0] * 35 + [1] * 35 + [1]


def test_large_connected_ligand_kept_whole():
    topology = app.Topology()
    chain = topology.addChain()
    specs, bonds = carbon_chain(80)
    add_residue(topology, chain, "BIG", specs, bonds)
    assert fragment_ids_from_topology(topology).tolist() == [0] * 80


def test_small_disconnected_ligand_kept_whole():
    topology = app.Topology()
    chain = topology.addChain()
    specs_a, bonds_a = carbon_chain(30)
    specs_b, bonds_b = carbon_chain(30, offset=30)
    add_residue(topology, chain, "LIG", specs_a + specs_b, bonds_a + bonds_b)
    assert fragment_ids_from_topology(topology).tolist() == [0] * 60


def test_large_polymer_residue_not_split():
    """A non-standard residue in a peptide chain counts as polymer and stays whole."""
    topology = app.Topology()
    chain = topology.addChain()
    backbone = [("N", "N"), ("CA", "C"), ("C", "C")]
    ala = add_residue(topology, chain, "ALA", backbone, [(0, 1), (1, 2)])
    specs_a, bonds_a = carbon_chain(40)
    specs_b, bonds_b = carbon_chain(40, offset=40)
    odd = add_residue(
        topology,
        chain,
        "XYZ",
        [("N", "N")] + specs_a + specs_b,
        [(0, 1)] + [(i + 1, j + 1) for i, j in bonds_a + bonds_b],
    )
    topology.addBond(ala[2], odd[0])
    ids = fragment_ids_from_topology(topology)
    assert ids.tolist() == [0] * 3 + [1] * 81


def test_ions_one_fragment_per_atom():
    topology = app.Topology()
    chain = topology.addChain()
    add_residue(topology, chain, "NA", [("NA", "Na")])
    add_residue(topology, chain, "HOH", [("O", "O"), ("H1", "H"), ("H2", "H")], [(0, 1), (0, 2)])
    add_residue(topology, chain, "CL", [("CL", "Cl"), ("CL", "Cl")])  # two ions, one residue
    add_residue(topology, chain, "WAT", [("O", "O"), ("H1", "H"), ("H2", "H")], [(0, 1), (0, 2)])
    assert fragment_ids_from_topology(topology).tolist() == [0, 1, 1, 1, 2, 3, 4, 4, 4]


# --------------------------------------------------------------------------- #
# Explicit ids and bad input
# --------------------------------------------------------------------------- #


def test_normalize_renumbers_by_first_appearance():
    ids = normalize_fragment_ids([7, 7, 3, 9, 3, 0])
    assert ids.dtype == np.int64
    assert ids.tolist() == [0, 0, 1, 2, 1, 3]


def test_normalize_keeps_contiguous_ids():
    assert normalize_fragment_ids(np.array([0, 1, 1, 2], dtype=np.int32), 4).tolist() == [
        0,
        1,
        1,
        2,
    ]


@pytest.mark.parametrize(
    "ids, n_atoms, message",
    [
        ([0, 1, 2], 4, "length 3 but there are 4 atoms"),
        ([0, -1, 2], 3, "negative"),
        ([0.0, 1.0, 2.0], 3, "integers"),
        ([True, False, True], 3, "integers"),
        (["a", "b", "c"], 3, "integers"),
        ([[0, 1], [2, 3]], 2, "one-dimensional"),
        ([], 0, "empty"),
    ],
)
def test_bad_explicit_ids_raise(ids, n_atoms, message):
    with pytest.raises(ValueError, match=message):
        validate_fragment_ids(ids, n_atoms)
    with pytest.raises(ValueError, match=message):
        normalize_fragment_ids(ids, n_atoms)


@pytest.mark.parametrize(
    "atoms, error, message",
    [
        ([], ValueError, "empty"),
        ([0, 1, 1], ValueError, "repeated"),
        ([0, 10**6], ValueError, "out of range"),
        ([-1], ValueError, "out of range"),
        ([0.0, 1.0], TypeError, "integers"),
    ],
)
def test_bad_atom_selection_raises(capped, atoms, error, message):
    with pytest.raises(error, match=message):
        fragment_ids_from_topology(capped, atoms=atoms)

"""Fragments for arbitrary molecules (openmmml_e2former.molecule_fragments).

Expectations are independent of the code under test: a BRICS split worked out by hand from
the published BRICS rules (Degen et al., ChemMedChem 2008), the fragment ids stored in the
authors' reference fixture (made by the fixture's author with RDKit BRICS and the merge
rule, see tests/fixtures/ubio-e2former-lsr/README.txt), and one fragment per residue for a
capped peptide.
"""

import os

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
from rdkit import Chem

from openmmml_e2former.molecule_fragments import (
    brics_fragment_ids_from_coordinates,
    merge_small_groups,
    molecule_fragment_ids,
)

HERE = os.path.dirname(__file__)
FIXTURE = os.path.join(HERE, "fixtures", "ubio-e2former-lsr")
DIPEPTIDE = os.path.join(HERE, "data", "ace_ala_nme.pdb")

# N-benzyl-4-methoxybenzamide. Heavy atoms in SMILES order:
#  0 C(methyl) 1 O 2-7 anisole ring (5 = ipso to the carbonyl) 8 C(=O) 9 O 10 N 11 CH2 12-17 phenyl
BENZAMIDE = "COc1ccc(cc1)C(=O)NCc1ccccc1"
# Worked by hand from the BRICS environments (hydrogens as counts, as after RemoveHs):
#  O1-c2   L3 (ether O, D2) - L16 (aromatic c)  : cut
#  c5-C8   L16 - L6 (acyclic carbonyl C)       : cut
#  C8-N10  L1 (C(=O), D3) - L5 (amide N)       : cut
#  N10-C11 L5 - L4 (sp3 C bonded to a carbon)  : cut
#  C11-c12 L8 (acyclic sp3 C) - L16            : cut
#  C0-O1   methyl C has D1, no environment     : kept
# Pieces with hydrogens: {0,1}+3H = 5, ring {2-7}+4H = 10, {8,9} = 2, {10}+H = 2, {11}+2H = 3,
# phenyl {12-17}+5H = 11. Merging (< 6 atoms, smallest first, into the smallest neighbour):
#  {8,9}(2) -> neighbours ring(10), {10}(2)      -> {8,9,10} (4 atoms)
#  {11}(3)  -> neighbours {8,9,10}(4), phenyl(11) -> {8,9,10,11} (7 atoms)
#  {0,1}(5) -> only neighbour the ring            -> {0..7} (15 atoms)
BENZAMIDE_HEAVY_FRAGMENTS = [set(range(0, 8)), {8, 9, 10, 11}, set(range(12, 18))]


def topology_from_smiles(smiles, residue_name="LIG", with_orders=False):
    """OpenMM topology (one residue, all hydrogens) with the SMILES atom order, heavy atoms first."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    Chem.Kekulize(mol, clearAromaticFlags=True)
    topology = app.Topology()
    residue = topology.addResidue(residue_name, topology.addChain())
    atoms = [
        topology.addAtom(
            f"{a.GetSymbol()}{a.GetIdx()}", app.Element.getByAtomicNumber(a.GetAtomicNum()), residue
        )
        for a in mol.GetAtoms()
    ]
    for bond in mol.GetBonds():
        order = int(bond.GetBondTypeAsDouble()) if with_orders else None
        topology.addBond(atoms[bond.GetBeginAtomIdx()], atoms[bond.GetEndAtomIdx()], order=order)
    return topology, mol


def expected_ids(mol, heavy_fragments):
    """Fragment ids 0..F-1 for all atoms, hydrogens following their heavy atom."""
    owner = {}
    for k, group in enumerate(heavy_fragments):
        owner.update({i: k for i in group})
    ids = []
    for atom in mol.GetAtoms():
        i = atom.GetIdx() if atom.GetAtomicNum() != 1 else atom.GetNeighbors()[0].GetIdx()
        ids.append(owner[i])
    return ids


@pytest.mark.parametrize("with_orders", [False, True], ids=["orders-inferred", "orders-given"])
def test_ligand_gets_the_hand_worked_brics_fragments(with_orders):
    topology, mol = topology_from_smiles(BENZAMIDE, with_orders=with_orders)
    ids = molecule_fragment_ids(topology)
    assert ids.tolist() == expected_ids(mol, BENZAMIDE_HEAVY_FRAGMENTS)
    sizes = np.bincount(ids).tolist()
    assert sizes == [15, 7, 11]  # the atom counts worked out above


def test_fixture_molecule_fragments_match_the_reference_data():
    """mol1 of the reference fixture: BRICS cuts N between a C(=O) piece of 8 atoms and a
    CH2-CH2 piece of 6 atoms; the 2-atom NH joins the smaller one."""
    data = np.load(os.path.join(FIXTURE, "mol1.npz"))
    topology, mol = topology_from_smiles("CC(C)Cc1ccc(cc1)C(C)C(=O)NCCc1ccc(O)cc1")
    assert [a.GetAtomicNum() for a in mol.GetAtoms()] == data["atomic_numbers"].tolist()
    assert molecule_fragment_ids(topology).tolist() == data["cluster_ids"].tolist()
    from_xyz = brics_fragment_ids_from_coordinates(data["atomic_numbers"].tolist(), data["positions"])
    assert from_xyz.tolist() == data["cluster_ids"].tolist()


def test_merge_goes_to_the_smallest_neighbour_and_repeats():
    # a path of atoms 0-1-...-9 split into pieces of sizes 7, 2, 3, 8
    groups = [[0, 1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11], list(range(12, 20))]
    adjacency = [set() for _ in range(20)]
    for i in range(19):
        adjacency[i].add(i + 1)
        adjacency[i + 1].add(i)
    merged = merge_small_groups(groups, adjacency, 6)
    # {7,8} joins {9,10,11} (3 < 7), the result (5 atoms) then joins the 7-atom piece (7 < 8)
    assert merged == [list(range(0, 12)), list(range(12, 20))]


def test_capped_peptide_gets_one_fragment_per_residue():
    pdb = app.PDBFile(DIPEPTIDE)  # ACE-ALA-ALA-NME
    ids = molecule_fragment_ids(pdb.topology)
    residues = [a.residue.name + str(a.residue.index) for a in pdb.topology.atoms()]
    # caps belong to the residue they cap: ACE to the first ALA, NME to the second
    expected = {"ACE0": 0, "ALA1": 0, "ALA2": 1, "NME3": 1}
    assert ids.tolist() == [expected[r] for r in residues]


def test_peptide_and_ligand_together_and_atom_subset():
    pdb = app.PDBFile(DIPEPTIDE)
    ligand, mol = topology_from_smiles(BENZAMIDE)
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.add(ligand, [openmm.Vec3(0, 0, 0)] * ligand.getNumAtoms() * unit.nanometer)
    n_peptide = pdb.topology.getNumAtoms()
    ids = molecule_fragment_ids(modeller.topology)
    assert ids[:n_peptide].max() == 1  # the peptide's two fragments are untouched
    lig = ids[n_peptide:] - 2
    assert lig.tolist() == expected_ids(mol, BENZAMIDE_HEAVY_FRAGMENTS)
    subset = list(range(n_peptide, modeller.topology.getNumAtoms()))
    assert molecule_fragment_ids(modeller.topology, subset).tolist() == lig.tolist()


def test_unresolvable_ligand_names_the_residue():
    topology = app.Topology()
    residue = topology.addResidue("XYZ", topology.addChain())
    carbon = topology.addAtom("C1", app.Element.getBySymbol("C"), residue)
    for k in range(5):  # a carbon with five hydrogens has no valid bond orders
        topology.addBond(carbon, topology.addAtom(f"H{k}", app.Element.getBySymbol("H"), residue))
    with pytest.raises(ValueError, match="residue XYZ.*cannot infer bond orders"):
        molecule_fragment_ids(topology)


def test_potential_option_uses_brics_fragments():
    from openmmml_e2former.potential import _fragment_ids

    topology, mol = topology_from_smiles(BENZAMIDE)
    indices = list(range(topology.getNumAtoms()))
    assert _fragment_ids(topology, indices, None, "brics") == expected_ids(mol, BENZAMIDE_HEAVY_FRAGMENTS)
    assert _fragment_ids(topology, indices, None, "residue") == [0] * len(indices)
    with pytest.raises(ValueError, match="ligandFragments"):
        _fragment_ids(topology, indices, None, "rings")

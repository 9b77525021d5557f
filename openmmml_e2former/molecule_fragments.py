"""Fragments for arbitrary molecules: residues for polymers, RDKit BRICS pieces for ligands.

E2Former-LSR's long-range blocks attend to fragment centroids. The authors' data stored the
fragment of every atom (``cluster_ids``) but their repository contains no code that makes
them; this module follows the rule used for the authors' reference fixture (see
``tests/fixtures/ubio-e2former-lsr/README.txt``), which is the closest knowable match:

1. Polymer residues (standard amino acids and nucleotides, or residues joined by
   peptide/phosphodiester links), terminal caps, water and monatomic ions are grouped by
   :func:`openmmml_e2former.fragments.fragment_ids_from_topology`: one fragment per residue
   (caps merged into the residue they cap), per water, per ion.
2. Every other residue of two or more atoms (a ligand, a small molecule, a solvent other than
   water) is cut at its RDKit BRICS bonds (``rdkit.Chem.BRICS.FindBRICSBonds``, Degen et al.
   2008), found on the heavy-atom graph (hydrogens as explicit H counts, as after
   ``Chem.RemoveHs``). Hydrogens go with the heavy atom they are bonded to.
3. Pieces with fewer than :data:`MIN_FRAGMENT_ATOMS` (6) atoms, hydrogens counted, are merged
   into a neighbouring piece: repeatedly, the smallest small piece (ties: the one whose first
   atom comes first) joins its *smallest* bonded neighbour piece (same tie rule), until no
   small piece has a neighbour. A molecule smaller than 6 atoms stays one fragment.

The molecule graph comes from the OpenMM topology: elements and the bonds inside the residue.
Bond orders are taken from the topology when every bond of the residue has one
(``Topology.addBond(..., type=, order=)``); otherwise they are inferred from the
connectivity with RDKit's ``DetermineBondOrders`` (xyz2mol), trying total charges
0, -1, +1, -2, +2, -3, +3. Inference needs all hydrogens present.

Limits: BRICS bonds that cross residues (a covalently bound ligand) are never cut, the
residue boundary is; inference can pick a wrong resonance/tautomer or fail for unusual
chemistry (metals, radicals, missing hydrogens) - then give bond orders or explicit
``fragmentIds``. Ids are ``0 .. F-1`` in order of first appearance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .optional import require

#: Pieces with fewer atoms than this (hydrogens included) are merged into a neighbour.
MIN_FRAGMENT_ATOMS = 6
#: Total charges tried, in this order, when bond orders are inferred.
CHARGES_TRIED = (0, -1, 1, -2, 2, -3, 3)


def _rdkit(module: str):
    """An RDKit module, or an ImportError naming the ``ligands`` extra and the ways around it."""
    return require(
        module,
        "ligands",
        "BRICS fragments of ligands and of molecules without residues (ligandFragments='brics' is "
        "the default with the authors' weights; explicit fragment ids need no RDKit)",
    )


def molecule_fragment_ids(topology, atoms: Sequence[int] | None = None) -> np.ndarray:
    """Per-atom fragment ids for an OpenMM topology following the module rules.

    Parameters
    ----------
    topology : openmm.app.Topology
        With elements and bonds.
    atoms : sequence of int, optional
        Atom indices to describe (e.g. the ML atoms), in the order wanted; fragments are
        decided on the whole topology first. Default: every atom.

    Returns
    -------
    numpy.ndarray, int64, shape (len(atoms),)
        Fragment ids ``0 .. F-1`` in order of first appearance.
    """
    from .fragments import fragment_ids_from_topology, normalize_fragment_ids

    base = np.asarray(fragment_ids_from_topology(topology), dtype=np.int64)
    raw = base.copy()
    offset = int(base.max()) + 1
    for residue in ligand_residues(topology):
        for group in residue_brics_groups(topology, residue):
            raw[group] = offset + min(group)
    selection = list(range(topology.getNumAtoms())) if atoms is None else [int(a) for a in atoms]
    return normalize_fragment_ids(raw[selection])


def ligand_residues(topology) -> list:
    """Residues that are cut by BRICS: neither polymer, cap, water nor ion, >= 2 atoms."""
    from . import fragments as fr

    residues = list(topology.residues())
    polymer = fr._polymer_residue_indices(topology, residues)
    skip = fr.WATER_RESIDUE_NAMES | fr.ION_RESIDUE_NAMES | fr.CAP_RESIDUE_NAMES
    return [
        r
        for r in residues
        if r.index not in polymer and r.name.upper() not in skip and len(list(r.atoms())) >= 2
    ]


def residue_brics_groups(topology, residue) -> list[list[int]]:
    """BRICS fragments of one residue as lists of topology atom indices."""
    atoms = list(residue.atoms())
    missing = [a.name for a in atoms if a.element is None]
    if missing:
        raise ValueError(
            f"residue {residue.name} {residue.id}: atoms without an element {missing[:5]} cannot be "
            "fragmented; give fragmentIds explicitly"
        )
    local = {a.index: k for k, a in enumerate(atoms)}
    bonds = []
    for bond in topology.bonds():
        i, j = bond[0].index, bond[1].index
        if i in local and j in local:
            bonds.append((local[i], local[j], _bond_order(bond)))
    numbers = [a.element.atomic_number for a in atoms]
    label = f"residue {residue.name} {residue.id}"
    groups = brics_groups(numbers, bonds, label)
    return [[atoms[k].index for k in group] for group in groups]


def _bond_order(bond) -> float | None:
    """Order of an OpenMM bond (1, 1.5 aromatic, 2, 3) or None when the topology has none."""
    from openmm.app import topology as top

    if bond.order is not None:
        return float(bond.order)
    table = {top.Single: 1.0, top.Double: 2.0, top.Triple: 3.0, top.Aromatic: 1.5, top.Amide: 1.0}
    return table.get(bond.type)


def brics_groups(
    numbers: Sequence[int], bonds: Sequence[tuple[int, int, float | None]], label: str = "molecule"
) -> list[list[int]]:
    """Fragments of one molecule: BRICS pieces, small ones merged (see the module rules).

    ``numbers`` are atomic numbers; ``bonds`` are (i, j, order or None) with 0-based indices
    into ``numbers``. Returns lists of atom indices, ordered by their first atom.
    """
    mol = rdkit_molecule(numbers, bonds, label)
    groups = _brics_pieces(mol)
    adjacency = [set() for _ in numbers]
    for i, j, _ in bonds:
        adjacency[i].add(j)
        adjacency[j].add(i)
    return merge_small_groups(groups, adjacency, MIN_FRAGMENT_ATOMS)


def rdkit_molecule(numbers, bonds, label: str = "molecule"):
    """A sanitized RDKit molecule with explicit hydrogens from elements and bonds.

    Orders are used when all bonds carry one, else inferred (module docstring).
    """
    Chem = _rdkit("rdkit.Chem")

    mol = Chem.RWMol()
    for z in numbers:
        atom = Chem.Atom(int(z))
        atom.SetNoImplicit(True)
        mol.AddAtom(atom)
    known = all(order is not None for _, _, order in bonds)
    types = {1.0: Chem.BondType.SINGLE, 1.5: Chem.BondType.AROMATIC, 2.0: Chem.BondType.DOUBLE}
    types[3.0] = Chem.BondType.TRIPLE
    for i, j, order in bonds:
        mol.AddBond(int(i), int(j), types.get(order, Chem.BondType.SINGLE) if known else Chem.BondType.SINGLE)
    mol = mol.GetMol()
    if known:
        return _sanitize_given_orders(mol, label)
    return _infer_bond_orders(mol, label)


def _sanitize_given_orders(mol, label: str):
    """Formal charges from valence (N with 4 bonds +1, O with 1 bond -1, ...), then sanitize."""
    Chem = _rdkit("rdkit.Chem")

    usual = {7: 3, 8: 2, 16: 2}
    for atom in mol.GetAtoms():
        if atom.GetAtomicNum() in usual and not atom.GetIsAromatic():
            valence = sum(b.GetBondTypeAsDouble() for b in atom.GetBonds())
            if abs(valence - round(valence)) < 1e-6 and valence != usual[atom.GetAtomicNum()]:
                if not (atom.GetAtomicNum() == 16 and valence in (4, 6)):
                    atom.SetFormalCharge(int(valence) - usual[atom.GetAtomicNum()])
    try:
        Chem.SanitizeMol(mol)
    except Exception as exc:  # RDKit raises several types for bad valences
        raise ValueError(f"{label}: the bond orders given in the topology are not valid ({exc})") from exc
    return mol


def _infer_bond_orders(mol, label: str):
    Chem = _rdkit("rdkit.Chem")
    rdDetermineBonds = _rdkit("rdkit.Chem.rdDetermineBonds")

    # failed attempts are expected; RDKit would log each one
    quiet = _rdkit("rdkit.rdBase").BlockLogs()  # noqa: F841
    for charge in CHARGES_TRIED:
        candidate = Chem.Mol(mol)
        try:
            rdDetermineBonds.DetermineBondOrders(candidate, charge=charge, embedChiral=False)
            Chem.SanitizeMol(candidate)
            return candidate
        except Exception:  # no valid assignment for this total charge
            continue
    raise ValueError(
        f"{label}: cannot infer bond orders from its elements and bonds (are all hydrogens present?); "
        "give bond orders in the topology (Topology.addBond(..., order=)) or explicit fragmentIds"
    )


def _brics_pieces(mol) -> list[list[int]]:
    """Atoms of ``mol`` grouped into the pieces left after cutting its BRICS bonds."""
    BRICS = _rdkit("rdkit.Chem.BRICS")

    heavy_mol, heavy_index = _heavy_atom_molecule(mol)
    cut = {tuple(sorted((heavy_index[a], heavy_index[b]))) for (a, b), _ in BRICS.FindBRICSBonds(heavy_mol)}
    parent = list(range(mol.GetNumAtoms()))

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for bond in mol.GetBonds():
        pair = tuple(sorted((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx())))
        if pair not in cut:
            ra, rb = find(pair[0]), find(pair[1])
            parent[max(ra, rb)] = min(ra, rb)
    pieces: dict[int, list[int]] = {}
    for k in range(mol.GetNumAtoms()):
        pieces.setdefault(find(k), []).append(k)
    return sorted(pieces.values(), key=min)


def _heavy_atom_molecule(mol):
    """(molecule without H atoms, its atom index -> index in ``mol``); H kept as H counts."""
    Chem = _rdkit("rdkit.Chem")

    heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() != 1]
    if not heavy:
        return Chem.Mol(), []
    stripped = Chem.RemoveHs(mol, sanitize=True)
    if stripped.GetNumAtoms() != len(heavy):  # RemoveHs keeps some H (e.g. H2, isotopes)
        raise ValueError("unexpected hydrogens kept by RDKit RemoveHs")
    return stripped, heavy


def merge_small_groups(groups: list[list[int]], adjacency: list[set], minimum: int) -> list[list[int]]:
    """Merge groups smaller than ``minimum`` atoms into their smallest bonded neighbour group.

    Repeatedly takes the smallest group below ``minimum`` that has a bonded neighbour (ties:
    lowest first atom) and joins it to its smallest neighbour (same tie rule).
    """
    groups = [sorted(g) for g in groups]
    while True:
        owner = {atom: k for k, g in enumerate(groups) for atom in g}
        small = [
            k for k, g in enumerate(groups) if len(g) < minimum and _neighbours(k, groups, owner, adjacency)
        ]
        if not small:
            return sorted(groups, key=min)
        k = min(small, key=lambda i: (len(groups[i]), groups[i][0]))
        target = min(_neighbours(k, groups, owner, adjacency), key=lambda i: (len(groups[i]), groups[i][0]))
        merged = sorted(groups[k] + groups[target])
        groups = [g for i, g in enumerate(groups) if i not in (k, target)] + [merged]


def _neighbours(k: int, groups, owner, adjacency) -> set[int]:
    return {owner[j] for atom in groups[k] for j in adjacency[atom] if owner[j] != k}


def brics_fragment_ids_from_coordinates(numbers: Sequence[int], positions, charge: int = 0) -> np.ndarray:
    """Fragment ids for one molecule given only elements and coordinates (Angstrom, [N, 3]).

    Bonds are found with RDKit's ``DetermineConnectivity`` (covalent radii) and then cut by
    :func:`brics_groups`; for structures read from XYZ files without fragment ids.
    """
    Chem = _rdkit("rdkit.Chem")
    rdDetermineBonds = _rdkit("rdkit.Chem.rdDetermineBonds")
    Point3D = _rdkit("rdkit.Geometry").Point3D

    mol = Chem.RWMol()
    for z in numbers:
        mol.AddAtom(Chem.Atom(int(z)))
    conformer = Chem.Conformer(len(numbers))
    for k, (x, y, z) in enumerate(np.asarray(positions, dtype=float)):
        conformer.SetAtomPosition(k, Point3D(x, y, z))
    mol.AddConformer(conformer)
    mol = mol.GetMol()
    rdDetermineBonds.DetermineConnectivity(mol, charge=int(charge))
    bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), None) for b in mol.GetBonds()]
    ids = np.zeros(len(numbers), dtype=np.int64)
    for component in _components(len(numbers), bonds):
        local = {atom: k for k, atom in enumerate(component)}
        sub = [(local[i], local[j], None) for i, j, _ in bonds if i in local]
        groups = brics_groups([numbers[a] for a in component], sub) if len(component) > 1 else [[0]]
        for group in groups:
            ids[[component[k] for k in group]] = component[min(group)] + 1
    from .fragments import normalize_fragment_ids

    return normalize_fragment_ids(ids)


def _components(n: int, bonds) -> list[list[int]]:
    adjacency = [[] for _ in range(n)]
    for i, j, _ in bonds:
        adjacency[i].append(j)
        adjacency[j].append(i)
    seen, parts = [False] * n, []
    for start in range(n):
        if seen[start]:
            continue
        stack, part = [start], []
        seen[start] = True
        while stack:
            k = stack.pop()
            part.append(k)
            for j in adjacency[k]:
                if not seen[j]:
                    seen[j] = True
                    stack.append(j)
        parts.append(sorted(part))
    return parts

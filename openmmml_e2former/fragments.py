"""Fragment ids from an OpenMM topology.

E2Former-LSR's long-range blocks let every atom attend to the centroids of
nearby *fragments*. Fragment membership is fixed by the topology; this module
turns an OpenMM ``Topology`` (or a user's explicit list) into a per-atom array
of fragment ids.

Rules, applied to every residue of the topology in this order of precedence
(see also ``docs/fragments.md``):

1. **Terminal caps** (``ACE``, ``FOR``, ``NME``, ``NMA``, ``NH2``, ``NHE``,
   ``CT3``) are merged into the polymer residue(s) they are bonded to, so a
   capped residue and its cap form one fragment. A cap with no bond to a
   polymer residue is merged into its chain neighbour if that is a polymer
   residue (the following residue for the N-terminal caps ``ACE``/``FOR``,
   the preceding one for the others); otherwise it is a fragment on its own.
2. **Water** (``HOH``, ``WAT``, ``SOL``, ``TIP3``, ... see
   :data:`WATER_RESIDUE_NAMES`): each water residue is its own fragment.
3. **Polymer residues** (a standard amino-acid or nucleotide name, or any
   residue joined to another residue by a peptide bond ``C``-``N`` or a
   phosphodiester bond ``O3'``-``P``): one fragment per residue.
4. **Monatomic ions**: every atom of any other one-atom residue, and every
   atom of a residue named in :data:`ION_RESIDUE_NAMES`, is its own fragment.
5. **Ligands and other residues**: one fragment per residue. A residue with
   more than :data:`MAX_WHOLE_RESIDUE_HEAVY_ATOMS` (64) heavy atoms is split
   into the connected components of its own bond graph (hydrogens go with the
   atom they are bonded to); if that graph is connected the residue stays one
   fragment however large it is. Splitting ligands into chemically meaningful
   pieces (e.g. RDKit BRICS) is not done yet.
6. Residues bonded to each other by any other bond (a covalent ligand, a
   disulfide, a metal-coordination bond) stay separate fragments.

Fragments are decided on residues and bonds only: names, not coordinates,
matter, and the topology must carry its bonds (``PDBFile``, ``PDBxFile``,
``Modeller`` and ``Topology.createStandardBonds`` provide them).

Ids are ``0 .. F-1`` numbered in order of first appearance along the atoms
considered (all atoms in topology order, or the ``atoms`` subset in the order
given).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .chemistry import ION_RESIDUE_NAMES, WATER_RESIDUE_NAMES  # noqa: F401  (re-exported)

#: Standard amino-acid residue names, including common protonation/naming variants.
AMINO_ACID_RESIDUE_NAMES = frozenset(
    {
        "ALA",
        "ARG",
        "ASN",
        "ASP",
        "CYS",
        "GLN",
        "GLU",
        "GLY",
        "HIS",
        "ILE",
        "LEU",
        "LYS",
        "MET",
        "PHE",
        "PRO",
        "SER",
        "THR",
        "TRP",
        "TYR",
        "VAL",
        "SEC",
        "PYL",
        "HID",
        "HIE",
        "HIP",
        "HSD",
        "HSE",
        "HSP",
        "CYX",
        "CYM",
        "ASH",
        "GLH",
        "LYN",
        "ARN",
        "TYM",
        "MSE",
        "AIB",
        "ORN",
        "PCA",
        "UNK",
    }
)

#: Standard nucleotide residue names (RNA, DNA, and AMBER 5'/3'-terminal variants).
NUCLEIC_RESIDUE_NAMES = frozenset(
    {
        "A",
        "C",
        "G",
        "U",
        "T",
        "I",
        "DA",
        "DC",
        "DG",
        "DT",
        "DU",
        "DI",
        "RA",
        "RC",
        "RG",
        "RU",
        "A5",
        "A3",
        "C5",
        "C3",
        "G5",
        "G3",
        "U5",
        "U3",
        "DA5",
        "DA3",
        "DC5",
        "DC3",
        "DG5",
        "DG3",
        "DT5",
        "DT3",
        "RA5",
        "RA3",
        "RC5",
        "RC3",
        "RG5",
        "RG3",
        "RU5",
        "RU3",
    }
)

#: Terminal caps that bond to the N terminus of the next residue (merge forward).
N_TERMINAL_CAP_NAMES = frozenset({"ACE", "FOR"})
#: Terminal caps that bond to the C terminus of the previous residue (merge backward).
C_TERMINAL_CAP_NAMES = frozenset({"NME", "NMA", "NH2", "NHE", "CT3"})
#: All terminal caps: merged into the residue they are bonded to.
CAP_RESIDUE_NAMES = N_TERMINAL_CAP_NAMES | C_TERMINAL_CAP_NAMES

#: A non-polymer residue with more heavy atoms than this is split into the
#: connected components of its bond graph.
MAX_WHOLE_RESIDUE_HEAVY_ATOMS = 64

# Atom-name pairs (either order) that make two residues polymer neighbours.
_POLYMER_LINK_NAMES = (("C", "N"), ("O3'", "P"), ("O3*", "P"))


# --------------------------------------------------------------------------- #
# Explicit ids
# --------------------------------------------------------------------------- #


def validate_fragment_ids(ids, n_atoms: int) -> np.ndarray:
    """Check a per-atom fragment-id array and return it as ``int64``.

    Parameters
    ----------
    ids : array-like of int, shape (n_atoms,)
        One fragment id per atom.
    n_atoms : int
        The number of atoms the ids must describe.

    Returns
    -------
    numpy.ndarray, dtype int64, shape (n_atoms,)
        The same ids (not renumbered).

    Raises
    ------
    ValueError
        If ``ids`` is not one-dimensional, has the wrong length, is empty,
        holds non-integer values (floats, booleans, strings) or negative ids.
    """
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"fragment ids must be a one-dimensional array, got shape {arr.shape}")
    if arr.shape[0] != n_atoms:
        raise ValueError(f"fragment ids have length {arr.shape[0]} but there are {n_atoms} atoms")
    if arr.shape[0] == 0:
        raise ValueError("fragment ids are empty: there are no atoms to assign to fragments")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"fragment ids must be integers, got values of dtype {arr.dtype}")
    negative = np.flatnonzero(arr < 0)
    if negative.size:
        shown = ", ".join(str(int(i)) for i in negative[:10])
        more = " ..." if negative.size > 10 else ""
        raise ValueError(
            f"fragment ids must be >= 0; {negative.size} negative id(s) at atom position(s) {shown}{more}"
        )
    return arr.astype(np.int64, copy=False)


def normalize_fragment_ids(ids, n_atoms: int | None = None) -> np.ndarray:
    """Validate explicit fragment ids and renumber them ``0 .. F-1``.

    The renumbering keeps atoms together exactly as given and numbers the
    fragments in order of their first appearance, e.g. ``[7, 7, 3, 9, 3]``
    becomes ``[0, 0, 1, 2, 1]``.

    Parameters
    ----------
    ids : array-like of int, shape (n_atoms,)
        One fragment id per atom; any non-negative integers.
    n_atoms : int, optional
        Expected number of atoms; defaults to ``len(ids)``.

    Returns
    -------
    numpy.ndarray, dtype int64, shape (n_atoms,)
        Contiguous ids ``0 .. F-1``.

    Raises
    ------
    ValueError
        As :func:`validate_fragment_ids`.
    """
    arr = np.asarray(ids)
    if n_atoms is None:
        n_atoms = arr.shape[0] if arr.ndim >= 1 else 0
    arr = validate_fragment_ids(arr, n_atoms)
    _, first_index, inverse = np.unique(arr, return_index=True, return_inverse=True)
    rank = np.empty(first_index.size, dtype=np.int64)
    rank[np.argsort(first_index, kind="stable")] = np.arange(first_index.size)
    return rank[inverse.reshape(-1)]


# --------------------------------------------------------------------------- #
# Topology -> ids
# --------------------------------------------------------------------------- #


def fragment_ids_from_topology(topology, atoms: Sequence[int] | None = None) -> np.ndarray:
    """Per-atom fragment ids for an OpenMM topology, following the module rules.

    Parameters
    ----------
    topology : openmm.app.Topology
        The full system topology, with bonds (as created by ``PDBFile``,
        ``PDBxFile``, ``Modeller`` or ``Topology.createStandardBonds``).
    atoms : sequence of int, optional
        Atom indices of the region to describe (e.g. the ML atoms). Fragments
        are decided on the whole topology and then restricted to these atoms,
        in the order given. Defaults to all atoms in topology order.

    Returns
    -------
    numpy.ndarray, dtype int64, shape (len(atoms),) or (n_atoms,)
        Fragment ids ``0 .. F-1`` in order of first appearance.

    Raises
    ------
    ValueError
        If the topology has no atoms, or ``atoms`` is empty, repeats an index
        or holds an index outside the topology.
    TypeError
        If ``atoms`` holds something other than integers.
    """
    n_atoms = topology.getNumAtoms()
    selection = _check_atom_selection(atoms, n_atoms)
    group_keys = _atom_group_keys(topology)
    raw = np.array([group_keys[i] for i in selection], dtype=np.int64)
    return normalize_fragment_ids(raw)


def _check_atom_selection(atoms: Sequence[int] | None, n_atoms: int) -> list[int]:
    """Return the atom indices to describe as a list, checking range and uniqueness."""
    if atoms is None:
        if n_atoms == 0:
            raise ValueError("the topology has no atoms")
        return list(range(n_atoms))
    selection = [_as_index(a) for a in atoms]
    if not selection:
        raise ValueError("the atom selection is empty")
    bad = [a for a in selection if a < 0 or a >= n_atoms]
    if bad:
        raise ValueError(f"atom indices out of range for a topology of {n_atoms} atoms: {bad[:10]}")
    if len(set(selection)) != len(selection):
        seen: set[int] = set()
        repeated = sorted({a for a in selection if a in seen or seen.add(a)})
        raise ValueError(f"atom indices repeated in the selection: {repeated[:10]}")
    return selection


def _as_index(value) -> int:
    """An atom index as a Python int; rejects floats and booleans."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"atom indices must be integers, got {value!r}")
    return int(value)


def _atom_group_keys(topology) -> list[int]:
    """One integer group key per atom (equal key = same fragment).

    Each key is the index of a representative atom of the group, so keys of
    different kinds of group never collide.
    """
    residues = list(topology.residues())
    polymer = _polymer_residue_indices(topology, residues)
    residue_root = _merge_caps(topology, residues, polymer)
    first_atom_of = {r.index: _first_atom_index(r) for r in residues}
    split = {
        r.index for r in residues if not _is_cap_residue(r) and r.index not in polymer and _needs_split(r)
    }
    components = _intra_residue_components(topology, residues, split)

    keys = [0] * topology.getNumAtoms()
    for residue in residues:
        kind = _residue_kind(residue, polymer, split)
        for atom in residue.atoms():
            if kind == "ion":
                keys[atom.index] = atom.index
            elif kind == "split":
                keys[atom.index] = components[atom.index]
            else:
                keys[atom.index] = first_atom_of[residue_root[residue.index]]
    return keys


def _residue_kind(residue, polymer: set[int], split: set[int]) -> str:
    """Classify a residue: "cap", "water", "polymer", "ion", "split" or "other".

    The order of the tests is the precedence of the rules.
    """
    if _is_cap_residue(residue):
        return "cap"
    if _is_water_residue(residue):
        return "water"
    if residue.index in polymer:
        return "polymer"
    if _is_ion_residue(residue):
        return "ion"
    if residue.index in split:
        return "split"
    return "other"


def _first_atom_index(residue) -> int:
    """Index of the first atom of a residue (-1 for a residue without atoms)."""
    return min((a.index for a in residue.atoms()), default=-1)


def _is_water_residue(residue) -> bool:
    return residue.name.upper() in WATER_RESIDUE_NAMES


def _is_ion_residue(residue) -> bool:
    """True for one-atom residues and residues named as monatomic ions."""
    n_atoms = sum(1 for _ in residue.atoms())
    return n_atoms == 1 or residue.name.upper() in ION_RESIDUE_NAMES


def _is_cap_residue(residue) -> bool:
    return residue.name.upper() in CAP_RESIDUE_NAMES


def _inter_residue_bonds(topology) -> Iterable[tuple]:
    """Bonds whose two atoms lie in different residues, as ``(atom1, atom2)``."""
    for bond in topology.bonds():
        a, b = bond[0], bond[1]
        if a.residue.index != b.residue.index:
            yield a, b


def _is_polymer_link(a, b) -> bool:
    """True if the bond a-b is a peptide (C-N) or phosphodiester (O3'-P) link."""
    names = (a.name, b.name)
    return any(names == pair or names == pair[::-1] for pair in _POLYMER_LINK_NAMES)


def _polymer_residue_indices(topology, residues) -> set[int]:
    """Indices of polymer residues: a standard name, or a peptide/phosphodiester link.

    Caps and waters are never polymer residues.
    """
    standard = AMINO_ACID_RESIDUE_NAMES | NUCLEIC_RESIDUE_NAMES
    polymer = {r.index for r in residues if r.name.upper() in standard}
    for a, b in _inter_residue_bonds(topology):
        if _is_polymer_link(a, b):
            polymer.update((a.residue.index, b.residue.index))
    return {
        r.index
        for r in residues
        if r.index in polymer and not _is_cap_residue(r) and not _is_water_residue(r)
    }


class _UnionFind:
    """Disjoint sets over integer keys; the root of a set is its smallest key."""

    def __init__(self, keys: Iterable[int]):
        self.parent = {k: k for k in keys}

    def find(self, key: int) -> int:
        parent = self.parent
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _merge_caps(topology, residues, polymer: set[int]) -> dict[int, int]:
    """Map each residue index to the residue index whose fragment it joins.

    A cap is united with every polymer residue or cap it is bonded to; a cap
    with no such bond is united with its chain neighbour (see
    :func:`_chain_neighbour_for_cap`). Other residues map to themselves or,
    when a cap joined them, to the smallest residue index of the group.
    """
    sets = _UnionFind(r.index for r in residues)

    def joinable(residue) -> bool:
        return residue.index in polymer or _is_cap_residue(residue)

    bonded_caps: set[int] = set()
    for a, b in _inter_residue_bonds(topology):
        ra, rb = a.residue, b.residue
        if (_is_cap_residue(ra) and joinable(rb)) or (_is_cap_residue(rb) and joinable(ra)):
            sets.union(ra.index, rb.index)
            bonded_caps.update(r.index for r in (ra, rb) if _is_cap_residue(r))

    for residue in residues:
        if _is_cap_residue(residue) and residue.index not in bonded_caps:
            neighbour = _chain_neighbour_for_cap(residue, polymer)
            if neighbour is not None:
                sets.union(residue.index, neighbour.index)

    return {r.index: sets.find(r.index) for r in residues}


def _chain_neighbour_for_cap(cap, polymer: set[int]):
    """The chain neighbour that a cap without bonds joins, or None.

    ``ACE``/``FOR`` join the following residue of the chain, the other caps
    the preceding one, and only if that residue is a polymer residue.
    """
    chain_residues = list(cap.chain.residues())
    position = next(i for i, r in enumerate(chain_residues) if r.index == cap.index)
    step = 1 if cap.name.upper() in N_TERMINAL_CAP_NAMES else -1
    j = position + step
    if 0 <= j < len(chain_residues) and chain_residues[j].index in polymer:
        return chain_residues[j]
    return None


def _is_heavy(atom) -> bool:
    """True unless the atom is a hydrogen (atoms without an element count as heavy)."""
    element = atom.element
    return element is None or element.atomic_number != 1


def _needs_split(residue) -> bool:
    """True for non-water residues with more than the maximum number of heavy atoms."""
    if _is_water_residue(residue):
        return False
    n_heavy = sum(1 for a in residue.atoms() if _is_heavy(a))
    return n_heavy > MAX_WHOLE_RESIDUE_HEAVY_ATOMS


def _intra_residue_components(topology, residues, residue_indices: set[int]) -> dict[int, int]:
    """Connected components of the own bond graph of each listed residue.

    Returns a map atom index -> smallest atom index of its component, for the
    atoms of the listed residues only.
    """
    if not residue_indices:
        return {}
    sets = _UnionFind(a.index for r in residues if r.index in residue_indices for a in r.atoms())
    for bond in topology.bonds():
        a, b = bond[0], bond[1]
        if a.residue.index == b.residue.index and a.residue.index in residue_indices:
            sets.union(a.index, b.index)
    return {key: sets.find(key) for key in sets.parent}

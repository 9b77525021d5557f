"""Chemistry tables: residue names of water and ions, and the formal-charge rule for residues.

A leaf module (it imports nothing from the package). The formal-charge rule decides a residue's
charge from its name and the names of the atoms it carries (which protons are present, the
termini), as a PDB file or an OpenMM topology gives them; ``tests/test_chemistry.py`` checks it
against the partial charges of every amino-acid and ion template of AMBER14.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Residue names treated as water: each such residue is one fragment.
WATER_RESIDUE_NAMES = frozenset(
    {
        "HOH",
        "WAT",
        "SOL",
        "H2O",
        "DOD",
        "TIP",
        "TIP3",
        "TIP3P",
        "TIP4",
        "TIP4P",
        "TIP5",
        "TIP5P",
        "T3P",
        "T4P",
        "T4E",
        "T5P",
        "SPC",
        "SPCE",
        "SPC/E",
        "OPC",
        "OPC3",
        "TP3",
        "TP4",
        "TP5",
    }
)

#: Residue names of monatomic ions: every atom of such a residue is its own fragment.
#: (Any one-atom residue is a fragment on its own anyway.)
ION_RESIDUE_NAMES = frozenset(
    {
        "LI",
        "NA",
        "K",
        "RB",
        "CS",
        "MG",
        "CA",
        "ZN",
        "FE",
        "FE2",
        "CU",
        "CU1",
        "MN",
        "NI",
        "CO",
        "CD",
        "SR",
        "BA",
        "F",
        "CL",
        "BR",
        "IOD",
        "SOD",
        "POT",
        "CLA",
        "CAL",
        "CES",
        "LIT",
        "RUB",
        "NA+",
        "K+",
        "CL-",
        "LI+",
        "MG2",
        "ZN2",
        "CA2",
    }
)


def is_water_or_ion(residue_name: str) -> bool:
    """Whether a residue name is a water or a monatomic ion (any case: ``Na``, ``NA``, ``HOH``)."""
    name = residue_name.upper()
    return name in WATER_RESIDUE_NAMES or name in ION_RESIDUE_NAMES


#: formal charges of monatomic ions, by element symbol
ION_CHARGES = {
    "Li": 1,
    "Na": 1,
    "K": 1,
    "Rb": 1,
    "Cs": 1,
    "Mg": 2,
    "Ca": 2,
    "Zn": 2,
    "F": -1,
    "Cl": -1,
    "Br": -1,
    "I": -1,
}

#: residue names that fix a protonation state by themselves (AMBER's variant names)
VARIANT_CHARGES = {"HIP": 1, "CYM": -1, "ASH": 0, "GLH": 0, "LYN": 0, "HID": 0, "HIE": 0, "CYX": 0}


def residue_formal_charge(name: str, atom_names: set, single_element: str | None = None) -> int:
    """Formal charge of one residue from its name and atom names (``single_element``: the
    element symbol of a one-atom residue, e.g. an ion). Residues this rule does not know
    (ligands, caps, water) count as neutral."""
    if single_element is not None:
        return ION_CHARGES.get(single_element, 0)
    charge = 0
    # Termini only for amino acids (CA present): NME's methyl H1/H2/H3 are no NH3+ group.
    if {"N", "CA", "H2", "H3"} <= atom_names:
        charge += 1  # charged N-terminus
    if {"CA", "OXT"} <= atom_names:
        charge -= 1  # charged C-terminus
    if name in VARIANT_CHARGES:
        return charge + VARIANT_CHARGES[name]
    side = {
        "ARG": 1 if "HH22" in atom_names else 0,
        "LYS": 1 if {"HZ1", "HZ2", "HZ3"} <= atom_names else 0,
        "ASP": 0 if "HD2" in atom_names else -1,
        "GLU": 0 if "HE2" in atom_names else -1,
        "HIS": 1 if {"HD1", "HE2"} <= atom_names else 0,
    }
    return charge + side.get(name, 0)


def formal_charge(topology, indices: Iterable[int]) -> int:
    """Sum of the formal charges of the residues of an OpenMM topology touched by ``indices``."""
    selected = set(indices)
    total = 0
    for residue in topology.residues():
        members = list(residue.atoms())
        if not any(a.index in selected for a in members):
            continue
        single = members[0].element.symbol if len(members) == 1 and members[0].element else None
        total += residue_formal_charge(residue.name, {a.name for a in members}, single)
    return total

"""Build peptides with hydrogens as OpenMM topologies: capped (ACE-X...-NME) or with free,
charged termini (NH3+ ... COO-, the zwitterion; PDBFixer adds the terminal OXT).

The backbone heavy atoms are placed from internal coordinates (ideal bond lengths and
angles, chosen phi/psi); PDBFixer adds the side-chain heavy atoms from its residue
templates and ``Modeller.addHydrogens`` adds hydrogens with the requested protonation
variants (AMBER names: ``ASH``, ``GLH``, ``HID``, ``HIE``, ``HIP``, ``LYN``, ``CYM``).
Lengths are in Angstrom.
"""

from __future__ import annotations

import io
import math

import numpy as np

#: The 20 standard residues.
STANDARD_RESIDUES = [
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
    "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
]  # fmt: skip

#: Protonation variant name -> (residue name in the PDB, variant passed to addHydrogens).
VARIANTS = {
    "ASH": ("ASP", "ASH"),
    "GLH": ("GLU", "GLH"),
    "HID": ("HIS", "HID"),
    "HIE": ("HIS", "HIE"),
    "HIP": ("HIS", "HIP"),
    "LYN": ("LYS", "LYN"),
}

#: The variants AMBER14 has terminal templates for (no N-/C-terminal ASH, GLH or LYN).
TERMINAL_VARIANTS = ("HID", "HIE", "HIP")

N_CA, CA_C, C_N, C_O, CH3_C = 1.46, 1.52, 1.33, 1.23, 1.52
ANGLE_C_N_CA, ANGLE_N_CA_C, ANGLE_CA_C_N, ANGLE_O = 121.7, 111.0, 116.2, 123.0


def place(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle: float, dihedral: float):
    """Position (Å) of atom d with |cd| = bond, angle bcd and dihedral abcd in degrees."""
    angle, dihedral = math.radians(angle), math.radians(dihedral)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d = bond * np.array(
        [-math.cos(angle), math.sin(angle) * math.cos(dihedral), math.sin(angle) * math.sin(dihedral)]
    )
    return c + d[0] * bc + d[1] * m + d[2] * n


def backbone_pdb(residues: list[str], phi: float = -120.0, psi: float = 130.0) -> str:
    """PDB text of ACE-residues-NME with backbone heavy atoms only (side chains missing)."""
    xyz: list[tuple[str, str, np.ndarray]] = []
    ch3 = np.zeros(3)
    c = np.array([CH3_C, 0.0, 0.0])
    n = place(np.array([0.0, 1.0, 0.0]), ch3, c, C_N, ANGLE_CA_C_N, 180.0)
    xyz += [("ACE", "CH3", ch3), ("ACE", "C", c)]
    chain = [ch3, c, n]
    carbonyls = [("ACE", c)]
    names = list(residues) + ["NME"]
    for i, _res in enumerate(residues):
        a, b, cc = chain[-3:]
        ca = place(a, b, cc, N_CA, ANGLE_C_N_CA, 180.0)
        cnew = place(b, cc, ca, CA_C, ANGLE_N_CA_C, phi)
        nnext = place(cc, ca, cnew, C_N, ANGLE_CA_C_N, psi)
        xyz += [(f"{i}", "N", cc), (f"{i}", "CA", ca), (f"{i}", "C", cnew)]
        chain += [ca, cnew, nnext]
        carbonyls.append((f"{i}", cnew))
    a, b, cc = chain[-3:]
    nme_c = place(a, b, cc, N_CA, ANGLE_C_N_CA, 180.0)
    xyz += [("NME", "N", cc), ("NME", "C", nme_c)]
    # carbonyl O: in the peptide plane, trans to the next CA
    oxygens = {}
    for k, (label, cpos) in enumerate(carbonyls):
        i_c = 3 * k + 1  # index of the carbonyl C in `chain`
        prev, nxt_n, nxt_ca = (
            chain[i_c - 1],
            chain[i_c + 1],
            (chain[i_c + 2] if i_c + 2 < len(chain) else nme_c),
        )
        oxygens[label] = place(nxt_ca, nxt_n, cpos, C_O, ANGLE_O, 0.0)
        del prev
    lines = []
    serial = 1
    order = ["ACE"] + [str(i) for i in range(len(residues))] + ["NME"]
    for resno, label in enumerate(order, start=1):
        resname = "ACE" if label == "ACE" else "NME" if label == "NME" else names[int(label)]
        atoms = [(name, pos) for lab, name, pos in xyz if lab == label]
        if label in oxygens:
            atoms.append(("O", oxygens[label]))
        for name, pos in atoms:
            element = "C" if name == "CH3" else name[0]
            lines.append(
                f"ATOM  {serial:5d} {name:<4s} {resname:3s} A{resno:4d}    "
                f"{pos[0]:8.3f}{pos[1]:8.3f}{pos[2]:8.3f}  1.00  0.00          {element:>2s}"
            )
            serial += 1
    lines.append("END")
    return "\n".join(lines) + "\n"


def build_capped_peptide(sequence: list[str], phi: float = -120.0, psi: float = 130.0):
    """(topology, positions in Å as ``[N, 3]`` array) of ACE-sequence-NME with hydrogens.

    ``sequence`` holds residue names from :data:`STANDARD_RESIDUES` or :data:`VARIANTS`.
    """
    return build_peptide(sequence, phi, psi, caps=True)


def peptide_name(sequence: list[str], caps: bool = True) -> str:
    """``ACE-X-Y-NME`` for a capped peptide, ``NH3+-X-Y-COO-`` for free termini."""
    return ("ACE-{}-NME" if caps else "NH3+-{}-COO-").format("-".join(sequence))


def _strip_caps(pdb_text: str) -> str:
    return "".join(line for line in pdb_text.splitlines(True) if line[17:20] not in ("ACE", "NME"))


def build_peptide(sequence: list[str], phi: float = -120.0, psi: float = 130.0, caps: bool = True):
    """(topology, positions Å) of the peptide ``sequence``, ACE/NME-capped or (``caps=False``)
    with free charged termini: NH3+ at the N-terminus, COO- (OXT added) at the C-terminus.
    Free termini need at least two residues (AMBER14 has no template for a free amino acid)."""
    if not caps and len(sequence) < 2:
        raise ValueError("a peptide with free termini needs at least 2 residues (no AMBER14 template)")
    ends = [] if caps else [r for r in (sequence[0], sequence[-1]) if r in VARIANTS]
    ends = [r for r in ends if r not in TERMINAL_VARIANTS]
    if ends:
        raise ValueError(
            f"AMBER14 has no terminal template for {ends[0]}; free termini allow {TERMINAL_VARIANTS}"
        )
    import openmm.app as app
    import openmm.unit as unit
    from pdbfixer import PDBFixer

    pdb_names, variants = [], [None]
    for name in sequence:
        if name in VARIANTS:
            pdb_names.append(VARIANTS[name][0])
            variants.append(VARIANTS[name][1])
        elif name in STANDARD_RESIDUES:
            pdb_names.append(name)
            variants.append(None)
        else:
            raise ValueError(f"unknown residue {name!r}; use one of {STANDARD_RESIDUES + list(VARIANTS)}")
    variants.append(None)
    text = backbone_pdb(pdb_names, phi, psi)
    if not caps:
        text, variants = _strip_caps(text), variants[1:-1]
    fixer = PDBFixer(pdbfile=io.StringIO(text))
    fixer.missingResidues = {}
    fixer.findMissingAtoms()
    if caps:
        fixer.missingTerminals = {}
    fixer.addMissingAtoms()
    modeller = app.Modeller(fixer.topology, fixer.positions)
    forcefield = app.ForceField("amber14-all.xml")
    modeller.addHydrogens(forcefield, variants=variants)
    positions = np.array(modeller.positions.value_in_unit(unit.angstrom))
    return modeller.topology, positions

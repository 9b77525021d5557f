"""Ligands of a protein-ligand complex: from the PDB/mmCIF residue and the ligand's SMILES or
SDF/MOL2 to a protonated molecule in its pocket pose and MM parameters for it.

1. The ligand's heavy atoms are read from the structure file (its hydrogens, if any, are
   dropped), their connectivity found from the geometry, and bond orders, formal charges and
   hydrogen counts copied from the template (RDKit). A template whose heavy atoms differ from
   the file's is refused with what differs.
2. Hydrogens are added where the template has them, with RDKit's geometry.
3. MM parameters: MMFF94 (RDKit) — partial charges, van der Waals (as Lennard-Jones with the
   same minimum), bonds, angles and torsions — written as an OpenMM ForceField XML with one
   atom type per ligand atom. Why MMFF94 and not OpenFF/GAFF: ``docs/ligands.md``.

Inside the ML region the ligand's bonded terms are replaced by the potential; only its charges
and Lennard-Jones parameters act across the ML/MM boundary (``tests/test_ligand.py``).

Everything is written to ``<run>/ligand/`` and read back from there on a restart.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..chemistry import is_water_or_ion
from ..optional import require
from ..units import ANGSTROM_PER_NM, KCAL_TO_KJ

#: MMFF94's unit factors: bond stretching (md/A -> kcal/mol/A^2) and angle bending
#: (md A/rad^2 -> kcal/mol/deg^2), as in Halgren, J. Comput. Chem. 17, 490 (1996)
MMFF_BOND_FACTOR = 143.9325
MMFF_ANGLE_FACTOR = 0.043844
#: AMBER's 1-4 scaling, which every NonbondedForce in one ForceField must share
COULOMB14_SCALE = 0.8333333333333334
LJ14_SCALE = 0.5
METHOD = "mmff94"
#: bump when the parameters written for the same input change (invalidates cached files)
FORMAT_VERSION = 1


@dataclass
class LigandSpec:
    """The protocol's ``ligand`` section: residue name plus SMILES or an SDF/MOL2 file."""

    resname: str
    smiles: str | None = None
    sdf: str | None = None

    @classmethod
    def from_options(cls, options: dict) -> LigandSpec | None:
        if not options.get("resname"):
            return None
        return cls(str(options["resname"]), options.get("smiles"), options.get("sdf"))

    @property
    def has_template(self) -> bool:
        return bool(self.smiles or self.sdf)


def _chem():
    return require("rdkit.Chem", "ligands", "parameterising a ligand from its SMILES or SDF")


def read_template(spec: LigandSpec):
    """The ligand's chemistry (an RDKit molecule) from the SMILES or the SDF/MOL2 file."""
    Chem = _chem()
    if spec.smiles:
        mol = Chem.MolFromSmiles(spec.smiles)
        if mol is None:
            raise ValueError(f"ligand {spec.resname}: RDKit cannot parse the SMILES {spec.smiles!r}")
        return mol
    path = str(spec.sdf)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ligand {spec.resname}: file not found: {path}")
    if path.lower().endswith(".mol2"):
        mols = [Chem.MolFromMol2File(path, removeHs=False)]
    else:
        mols = list(Chem.SDMolSupplier(path, removeHs=False))
    if len(mols) != 1:
        raise ValueError(f"ligand {spec.resname}: {path} holds {len(mols)} molecules; give a file with one")
    if mols[0] is None:
        raise ValueError(f"ligand {spec.resname}: RDKit cannot read the molecule in {path}")
    return mols[0]


def find_residue(path: str, resname: str) -> tuple[list[str], list[str], np.ndarray, dict]:
    """Names, element symbols and positions (A) of the heavy atoms of residue ``resname`` in a
    PDB/mmCIF file, and where it was found. Exactly one such residue must exist."""
    import openmm.app as app
    import openmm.unit as unit

    reader = app.PDBxFile if path.lower().endswith((".cif", ".mmcif")) else app.PDBFile
    structure = reader(path)
    found = [r for r in structure.topology.residues() if r.name == resname]
    if not found:
        names = {r.name for r in structure.topology.residues() if not is_water_or_ion(r.name)}
        others = sorted(names - _standard_residues())
        raise ValueError(
            f"ligand residue {resname!r} not found in {path}; its non-standard residues are "
            f"{others or 'none'}"
        )
    if len(found) > 1:
        where = ", ".join(f"{r.chain.id}:{r.id}" for r in found)
        raise ValueError(f"{path} has {len(found)} residues named {resname!r} ({where}); keep one")
    residue = found[0]
    xyz = structure.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    heavy = [a for a in residue.atoms() if a.element is not None and a.element.symbol != "H"]
    if not heavy:
        raise ValueError(f"ligand residue {resname!r} in {path} has no heavy atoms")
    hydrogens = sum(1 for a in residue.atoms() if a.element is not None and a.element.symbol == "H")
    names = _unique_names([a.name for a in heavy], [a.element.symbol for a in heavy])
    where = {"chain": residue.chain.id, "id": residue.id, "hydrogens_in_file": hydrogens}
    return names, [a.element.symbol for a in heavy], np.array([xyz[a.index] for a in heavy]), where


def _standard_residues() -> set:
    from pdbfixer.pdbfixer import dnaResidues, proteinResidues, rnaResidues

    return set(proteinResidues) | set(rnaResidues) | set(dnaResidues)


def _unique_names(names: list[str], elements: list[str]) -> list[str]:
    """The file's atom names, or element + index for all of them when they are not unique."""
    if len(set(names)) == len(names) and all(names):
        return list(names)
    return [f"{e}{i + 1}" for i, e in enumerate(elements)]


def _formula(symbols) -> str:
    counts = Counter(symbols)
    return "".join(f"{e}{counts[e]}" for e in sorted(counts, key=lambda e: (e != "C", e)))


def protonate(names, elements, positions_a, template, resname: str):
    """The file's heavy atoms with bond orders, charges and hydrogens taken from ``template``.

    Returns an RDKit molecule whose first atoms are the file's heavy atoms in file order
    (positions kept), followed by the added hydrogens."""
    Chem = _chem()
    AllChem = require("rdkit.Chem.AllChem", "ligands")
    determine = require("rdkit.Chem.rdDetermineBonds", "ligands")

    heavy_template = Chem.RemoveHs(template)
    want = _formula(a.GetSymbol() for a in heavy_template.GetAtoms())
    have = _formula(elements)
    if want != have:
        diff = Counter(a.GetSymbol() for a in heavy_template.GetAtoms())
        diff.subtract(Counter(elements))
        parts = ", ".join(f"{e} {n:+d}" for e, n in sorted(diff.items()) if n)
        raise ValueError(
            f"ligand {resname}: the SMILES/SDF has heavy atoms {want}, the structure file's residue has "
            f"{have} (template minus file: {parts})"
        )
    mol = Chem.RWMol()
    conformer = Chem.Conformer(len(elements))
    for i, (symbol, xyz) in enumerate(zip(elements, positions_a, strict=True)):
        mol.AddAtom(Chem.Atom(symbol))
        conformer.SetAtomPosition(i, [float(x) for x in xyz])
    mol.AddConformer(conformer)
    mol = mol.GetMol()
    determine.DetermineConnectivity(mol)
    try:
        matched = AllChem.AssignBondOrdersFromTemplate(heavy_template, mol)
    except ValueError:
        raise ValueError(
            f"ligand {resname}: same heavy atoms ({have}) as the SMILES/SDF, but the bonds found from "
            "the structure's geometry do not match its connectivity (another isomer, or a distorted "
            "pose)"
        ) from None
    match = matched.GetSubstructMatch(heavy_template)
    for t_index, m_index in enumerate(match):
        atom, source = matched.GetAtomWithIdx(m_index), heavy_template.GetAtomWithIdx(t_index)
        atom.SetFormalCharge(source.GetFormalCharge())
        atom.SetNumExplicitHs(source.GetTotalNumHs())
        atom.SetNoImplicit(True)
        atom.SetNumRadicalElectrons(0)
    Chem.SanitizeMol(matched)
    return Chem.AddHs(matched, addCoords=True)


def atom_names(mol, heavy_names: list[str]) -> list[str]:
    """Heavy atoms keep the file's names; hydrogens are H1, H2, ... (skipping names in use)."""
    names, used, k = list(heavy_names), set(heavy_names), 0
    for _ in range(mol.GetNumAtoms() - len(heavy_names)):
        k += 1
        while f"H{k}" in used:
            k += 1
        names.append(f"H{k}")
    return names


def mmff_parameters(mol, resname: str) -> dict:
    """MMFF94 parameters of every atom, bond, angle and torsion of ``mol`` (OpenMM units)."""
    AllChem = require("rdkit.Chem.AllChem", "ligands")

    props = AllChem.MMFFGetMoleculeProperties(mol)
    if props is None:
        raise ValueError(f"ligand {resname}: MMFF94 has no atom types for this molecule")
    n = mol.GetNumAtoms()
    atoms = []
    for i in range(n):
        r_star, epsilon = props.GetMMFFVdWParams(i, i)[:2]
        atoms.append(
            {
                "charge": props.GetMMFFPartialCharge(i),
                "sigma": r_star / 2 ** (1 / 6) / ANGSTROM_PER_NM,  # LJ with MMFF's minimum R*
                "epsilon": epsilon * KCAL_TO_KJ,
            }
        )
    bonds = []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        _, kb, r0 = props.GetMMFFBondStretchParams(mol, i, j)
        k = MMFF_BOND_FACTOR * kb * KCAL_TO_KJ * ANGSTROM_PER_NM**2
        bonds.append((i, j, r0 / ANGSTROM_PER_NM, k))
    angles, torsions = [], []
    neighbours = [[a.GetIdx() for a in mol.GetAtomWithIdx(i).GetNeighbors()] for i in range(n)]
    for j in range(n):
        for a, i in enumerate(neighbours[j]):
            for k in neighbours[j][a + 1 :]:
                found = props.GetMMFFAngleBendParams(mol, i, j, k)
                if found is None:
                    continue
                _, ka, theta0 = found
                k_rad = MMFF_ANGLE_FACTOR * ka * (180.0 / math.pi) ** 2 * KCAL_TO_KJ
                angles.append((i, j, k, math.radians(theta0), k_rad))
    for bond in mol.GetBonds():
        j, k = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        for i in neighbours[j]:
            for m in neighbours[k]:
                if i in (j, k) or m in (j, k) or i == m:
                    continue
                found = props.GetMMFFTorsionParams(mol, i, j, k, m)
                if found is not None:
                    torsions.append((i, j, k, m, *(v * KCAL_TO_KJ for v in found[1:])))
    return {"atoms": atoms, "bonds": bonds, "angles": angles, "torsions": torsions}


def forcefield_xml(mol, names: list[str], resname: str, params: dict) -> str:
    """An OpenMM ForceField file with one residue template and one atom type per atom.

    MMFF94's torsion 0.5 [V1 (1 + cos p) + V2 (1 - cos 2p) + V3 (1 + cos 3p)] is three periodic
    terms (k = V/2; phases 0, pi, 0); its out-of-plane terms and stretch-bend coupling have no
    OpenMM ForceField form and are left out (they act only in MM-only stages)."""
    import xml.etree.ElementTree as ET

    root = ET.Element("ForceField")
    types = ET.SubElement(root, "AtomTypes")
    prefix = f"e2f-{resname}-"
    for atom, name in zip(mol.GetAtoms(), names, strict=True):
        ET.SubElement(
            types,
            "Type",
            name=prefix + name,
            **{"class": prefix + name},
            element=atom.GetSymbol(),
            mass=f"{atom.GetMass():.5f}",
        )
    residue = ET.SubElement(ET.SubElement(root, "Residues"), "Residue", name=resname)
    for name in names:
        ET.SubElement(residue, "Atom", name=name, type=prefix + name)
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        ET.SubElement(residue, "Bond", atomName1=names[i], atomName2=names[j])
    cls = [prefix + name for name in names]
    force = ET.SubElement(root, "HarmonicBondForce")
    for i, j, r0, k in params["bonds"]:
        ET.SubElement(force, "Bond", class1=cls[i], class2=cls[j], length=f"{r0:.6f}", k=f"{k:.4f}")
    force = ET.SubElement(root, "HarmonicAngleForce")
    for i, j, k, theta0, k_rad in params["angles"]:
        ET.SubElement(
            force,
            "Angle",
            class1=cls[i],
            class2=cls[j],
            class3=cls[k],
            angle=f"{theta0:.6f}",
            k=f"{k_rad:.4f}",
        )
    force = ET.SubElement(root, "PeriodicTorsionForce")
    for i, j, k, m, v1, v2, v3 in params["torsions"]:
        terms = [(1, 0.0, v1 / 2), (2, math.pi, v2 / 2), (3, 0.0, v3 / 2)]
        kept = [t for t in terms if t[2] != 0.0] or [(1, 0.0, 0.0)]
        fields = {"class1": cls[i], "class2": cls[j], "class3": cls[k], "class4": cls[m]}
        for n, (periodicity, phase, k_torsion) in enumerate(kept, start=1):
            fields[f"periodicity{n}"] = str(periodicity)
            fields[f"phase{n}"] = f"{phase:.10f}"
            fields[f"k{n}"] = f"{k_torsion:.6f}"
        ET.SubElement(force, "Proper", **fields)
    force = ET.SubElement(
        root, "NonbondedForce", coulomb14scale=str(COULOMB14_SCALE), lj14scale=str(LJ14_SCALE)
    )
    ET.SubElement(force, "UseAttributeFromResidue", name="charge")
    for atom, name in zip(params["atoms"], names, strict=True):
        ET.SubElement(
            force, "Atom", type=prefix + name, sigma=f"{atom['sigma']:.6f}", epsilon=f"{atom['epsilon']:.6f}"
        )
    for atom, node in zip(params["atoms"], residue.findall("Atom"), strict=True):
        node.set("charge", f"{atom['charge']:.6f}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def ligand_topology(mol, names: list[str], resname: str, where: dict):
    """An OpenMM topology (one chain, one residue) and positions (nm) of the protonated ligand."""
    import openmm.app as app
    import openmm.unit as unit

    Chem = _chem()
    orders = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3}
    types = {Chem.BondType.SINGLE: app.Single, Chem.BondType.DOUBLE: app.Double}
    types.update({Chem.BondType.TRIPLE: app.Triple, Chem.BondType.AROMATIC: app.Aromatic})
    topology = app.Topology()
    residue = topology.addResidue(
        resname, topology.addChain(str(where.get("chain") or "L")), str(where.get("id", 1))
    )
    atoms = [
        topology.addAtom(name, app.Element.getByAtomicNumber(a.GetAtomicNum()), residue)
        for a, name in zip(mol.GetAtoms(), names, strict=True)
    ]
    for bond in mol.GetBonds():
        kind = bond.GetBondType()
        topology.addBond(
            atoms[bond.GetBeginAtomIdx()], atoms[bond.GetEndAtomIdx()], types.get(kind), orders.get(kind)
        )
    xyz = mol.GetConformer().GetPositions() / ANGSTROM_PER_NM
    return topology, [openmm_vec(p) for p in xyz] * unit.nanometer


def openmm_vec(p):
    import openmm

    return openmm.Vec3(float(p[0]), float(p[1]), float(p[2]))


@dataclass
class PreparedLigand:
    """The protonated ligand and its parameters, as written to ``<run>/ligand/``."""

    resname: str
    xml_path: str
    sdf_path: str
    record: dict

    def topology(self):
        """(topology, positions nm) of the protonated ligand, read back from the SDF."""
        Chem = _chem()
        mol = Chem.MolFromMolFile(self.sdf_path, removeHs=False)
        return ligand_topology(mol, self.record["atom_names"], self.resname, self.record["found"])

    def summary(self) -> str:
        r = self.record
        return (
            f"ligand {self.resname} ({r['found']['chain']}:{r['found']['id']}): {r['formula']}, "
            f"{r['n_atoms']} atoms ({r['hydrogens_added']} hydrogens from the template; "
            f"{r['found']['hydrogens_in_file'] or 'none'} in the file), net charge {r['net_charge']:+d} e, "
            f"MM parameters {r['method']} (RDKit {r['rdkit']}) in {os.path.basename(self.xml_path)}"
        )


def _input_digest(structure: str, spec: LigandSpec) -> str:
    digest = hashlib.sha256()
    with open(structure, "rb") as handle:
        digest.update(handle.read())
    digest.update(f"{spec.resname}|{spec.smiles}|{METHOD}|{FORMAT_VERSION}".encode())
    if spec.sdf:
        with open(spec.sdf, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()


def prepare_ligand(structure: str, spec: LigandSpec, folder: str) -> PreparedLigand:
    """Protonate and parameterise the ligand once; later calls read ``folder/ligand/``.

    A folder whose ligand came from another input (structure, SMILES/SDF) is refused rather than
    overwritten."""
    from .restart import atomic_write_json, atomic_write_text

    if spec.sdf and not os.path.isfile(spec.sdf):
        raise FileNotFoundError(f"ligand {spec.resname}: file not found: {spec.sdf}")
    out = os.path.join(folder, "ligand")
    paths = {k: os.path.join(out, f"{spec.resname}.{k}") for k in ("xml", "sdf", "json")}
    digest = _input_digest(structure, spec)
    if os.path.isfile(paths["json"]):
        with open(paths["json"]) as handle:
            record = json.load(handle)
        if record.get("input_sha256") != digest:
            raise ValueError(
                f"{out} holds ligand parameters made from other input (structure, SMILES or SDF); "
                "use a new run folder or --overwrite"
            )
        return PreparedLigand(spec.resname, paths["xml"], paths["sdf"], record)
    Chem = _chem()
    template = read_template(spec)
    heavy_names, elements, positions, where = find_residue(structure, spec.resname)
    mol = protonate(heavy_names, elements, positions, template, spec.resname)
    names = atom_names(mol, heavy_names)
    params = mmff_parameters(mol, spec.resname)
    os.makedirs(out, exist_ok=True)
    atomic_write_text(paths["xml"], forcefield_xml(mol, names, spec.resname, params))
    atomic_write_text(paths["sdf"], Chem.MolToMolBlock(mol))
    rdkit = require("rdkit", "ligands")
    record = {
        "resname": spec.resname,
        "smiles": Chem.MolToSmiles(Chem.RemoveHs(mol)),
        "template": spec.smiles or os.path.abspath(spec.sdf),
        "formula": _formula(a.GetSymbol() for a in mol.GetAtoms()),
        "n_atoms": mol.GetNumAtoms(),
        "hydrogens_added": mol.GetNumAtoms() - len(heavy_names),
        "net_charge": Chem.GetFormalCharge(mol),
        "mm_charge_sum": round(sum(a["charge"] for a in params["atoms"]), 6),
        "method": METHOD,
        "rdkit": rdkit.__version__,
        "atom_names": names,
        "found": where,
        "input_sha256": digest,
    }
    atomic_write_json(paths["json"], record)
    return PreparedLigand(spec.resname, paths["xml"], paths["sdf"], record)


def protonate_input(structure: str, spec: LigandSpec):
    """The protonated ligand from the structure file and the template, written nowhere (None
    without a template: then only the residue's presence is checked)."""
    if spec.sdf and not os.path.isfile(spec.sdf):
        raise FileNotFoundError(f"ligand {spec.resname}: file not found: {spec.sdf}")
    heavy_names, elements, positions, _ = find_residue(structure, spec.resname)
    if not spec.has_template:
        return None
    return protonate(heavy_names, elements, positions, read_template(spec), spec.resname)


def ligand_in_selection(structure: str, resname: str, selection: str) -> bool:
    """Whether ``selection`` takes atoms of the ligand in the input structure (heavy atoms, before
    preparation; distances as in the file). A selection that cannot be evaluated on the input
    (it names solvent that preparation adds) counts as taking the ligand: the potential's own
    element check then decides after preparation."""
    import openmm.app as app
    import openmm.unit as unit

    from .selection import NONE_WORDS, select_atoms

    if str(selection).strip().lower() in NONE_WORDS:
        return False
    reader = app.PDBxFile if structure.lower().endswith((".cif", ".mmcif")) else app.PDBFile
    data = reader(structure)
    xyz = data.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    try:
        chosen = set(select_atoms(data.topology, selection, positions_nm=xyz))
    except ValueError:
        return True
    return any(a.index in chosen for a in data.topology.atoms() if a.residue.name == resname)


def check_elements(mol, resname: str, supported: list[int] | None, potential: str) -> None:
    """Refuse, before any simulation, a ligand in the ML region with elements the potential lacks."""
    if not supported:
        return
    Chem = _chem()
    bad = sorted({a.GetSymbol() for a in mol.GetAtoms() if a.GetAtomicNum() not in supported})
    if bad:
        table = Chem.GetPeriodicTable()
        names = ", ".join(table.GetElementSymbol(z) for z in supported)
        raise ValueError(
            f"ligand {resname} contains {', '.join(bad)}, which the potential {potential!r} "
            f"does not support (it knows {names}); leave the ligand out of the ML region or use other weights"
        )

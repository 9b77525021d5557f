"""Real protein-ligand complexes that ship inside a package: the JACS benchmark set of Wang et al.
(J. Am. Chem. Soc. 137, 2695 (2015)) in openmmforcefields (``data/perses_jacs_systems``: each
target's protein as PDB and its ligands, posed in the pocket, as SDF).

:func:`write_complex` writes one target with one of its ligands as a single PDB file — the ligand
as a HETATM residue with heavy atoms only, as a crystal structure gives it — and returns the
ligand's SMILES: the input ``e2former run ligand-in-pocket`` expects.
"""

from __future__ import annotations

import os

from ..optional import require

#: target -> (protein PDB, ligands SDF) inside openmmforcefields/data/perses_jacs_systems
TARGETS = {
    "mcl1": ("MCL1_protein.pdb", "MCL1_ligands.sdf"),
    "tyk2": ("Tyk2_protein.pdb", "Tyk2_ligands_shifted.sdf"),
    "thrombin": ("Thrombin_protein.pdb", "Thrombin_ligands.sdf"),
    "jnk1": ("Jnk1_protein.pdb", "Jnk1_ligands.sdf"),
    "ptp1b": ("PTP1B_protein.pdb", "PTP1B_ligands.sdf"),
    "p38a": ("p38_protein.pdb", "p38_ligands_shifted.sdf"),
    "cdk2": ("CDK2_protein.pdb", "CDK2_ligands_shifted.sdf"),
    "bace": ("Bace_protein.pdb", "Bace_ligands_shifted.sdf"),
}


def jacs_folder(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}: one of {sorted(TARGETS)}")
    package = require("openmmforcefields", "ligands", "the example protein-ligand complexes")
    folder = os.path.join(os.path.dirname(package.__file__), "data", "perses_jacs_systems", target)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"openmmforcefields {package.__version__} has no {folder}")
    return folder


def ligand_names(target: str) -> list[str]:
    """The names of the ligands in a target's SDF file."""
    Chem = require("rdkit.Chem", "ligands")
    folder = jacs_folder(target)
    return [m.GetProp("_Name") for m in Chem.SDMolSupplier(os.path.join(folder, TARGETS[target][1])) if m]


def write_complex(target: str, ligand: str, path: str, resname: str = "LIG") -> str:
    """Write ``target``'s protein with ligand ``ligand`` (heavy atoms, HETATM ``resname``) to
    ``path``; return the ligand's SMILES (with its charge state as the SDF gives it)."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    Chem = require("rdkit.Chem", "ligands")
    folder = jacs_folder(target)
    protein_file, ligands_file = TARGETS[target]
    mols = {
        m.GetProp("_Name"): m
        for m in Chem.SDMolSupplier(os.path.join(folder, ligands_file), removeHs=False)
        if m
    }
    if ligand not in mols:
        raise ValueError(f"{target} has no ligand {ligand!r}: {sorted(mols)}")
    heavy = Chem.RemoveHs(mols[ligand])
    protein = app.PDBFile(os.path.join(folder, protein_file))
    modeller = app.Modeller(protein.topology, protein.positions)
    topology = app.Topology()
    residue = topology.addResidue(resname, topology.addChain("L"))
    counts: dict = {}
    atoms = []
    for atom in heavy.GetAtoms():
        symbol = atom.GetSymbol()
        counts[symbol] = counts.get(symbol, 0) + 1
        element = app.Element.getBySymbol(symbol)
        atoms.append(topology.addAtom(f"{symbol.upper()}{counts[symbol]}", element, residue))
    for bond in heavy.GetBonds():
        topology.addBond(atoms[bond.GetBeginAtomIdx()], atoms[bond.GetEndAtomIdx()])
    nm = heavy.GetConformer().GetPositions() / 10.0  # Modeller keeps one unit (nm) for all positions
    positions = [openmm.Vec3(*(float(x) for x in p)) for p in nm] * unit.nanometer
    modeller.add(topology, positions)
    with open(path, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, handle, keepIds=False)
    return Chem.MolToSmiles(heavy)

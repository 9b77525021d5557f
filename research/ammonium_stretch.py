"""Control for ``research/bond_stretch.py``: the N-H stretch of isolated ammonium ions.

Usage: ``python research/ammonium_stretch.py``. For NH4+, methylammonium and n-butylammonium (RDKit
ETKDG + MMFF geometry), one N-H bond is stretched along its own direction to 1.0-2.0 Å and the
energy relative to 1.0 Å is printed for GFN2-xTB (tblite) and B3LYP/def2-SVP (PySCF). Alone, an
ammonium holds its proton (both methods: ~2 eV at 1.6 Å); a much flatter GFN2-xTB curve for the
same bond inside a charged protein piece is an effect of that piece's field, not of the N-H bond.
"""

from __future__ import annotations

import numpy as np

DISTANCES = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0)


def ion(smiles: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Atomic numbers, positions (Å), the N and one of its H's of an RDKit/MMFF ammonium ion."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    AllChem.MMFFOptimizeMolecule(mol)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    nitrogen = int(np.flatnonzero(numbers == 7)[0])
    hydrogen = next(a.GetIdx() for a in mol.GetAtomWithIdx(nitrogen).GetNeighbors() if a.GetAtomicNum() == 1)
    return numbers, mol.GetConformer().GetPositions(), nitrogen, hydrogen


def energies(numbers: np.ndarray, positions: np.ndarray) -> tuple[float, float]:
    """(GFN2-xTB, B3LYP/def2-SVP) energies in eV of a singly charged closed-shell ion, through the
    project's labellers."""
    from openmmml_e2former.data.labellers import PySCFLabeller, XTBLabeller
    from openmmml_e2former.data.structure import Structure

    ion = Structure("ion", "ion", numbers, positions, np.zeros(len(numbers), dtype=int), charge=1)
    return XTBLabeller().label(ion).energy, PySCFLabeller(xc="b3lyp", gpu=False).label(ion).energy


def main() -> None:
    for smiles in ("[NH4+]", "C[NH3+]", "CCCC[NH3+]"):
        numbers, positions, n, h = ion(smiles)
        direction = (positions[h] - positions[n]) / np.linalg.norm(positions[h] - positions[n])
        rows = []
        for d in DISTANCES:
            moved = positions.copy()
            moved[h] = positions[n] + d * direction
            rows.append(energies(numbers, moved))
        print(f"{smiles}: N-H (Å), E - E(1.0 Å) GFN2-xTB, B3LYP/def2-SVP (eV)")
        for d, (x, b) in zip(DISTANCES, rows, strict=True):
            print(f"  {d:.1f}  {x - rows[0][0]:6.2f}  {b - rows[0][1]:6.2f}")


if __name__ == "__main__":
    main()

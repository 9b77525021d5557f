"""Largest force error per residue of whole-protein structures, for one or more checkpoints.

Usage::

    python research/residue_errors.py datasets/gfn2-villin-whole-heldout.extxyz.gz \\
        runs/e2former-lsr-al2.pt openmmml_e2former/potentials/e2former-lsr.pt \\
        [--pdb stability/villin_protein.pdb]

The structures must hold the protein's atoms in the PDB's order (``villin_windows(window=35,
stride=35)`` and ``run_folder_windows(folder, 35, stride=35)`` keep it). Prints, per checkpoint and
structure, the largest force-component error and the three residues with the largest
error (eV/Å), evaluated in float64 (``openmmml_e2former.probes.residue_errors``).
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from openmmml_e2former.checkpoints import load_checkpoint
    from openmmml_e2former.data.extxyz import read_structures
    from openmmml_e2former.probes import residue_errors, residue_index

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset")
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--pdb", default="stability/villin_protein.pdb")
    args = parser.parse_args()
    structures = read_structures(args.dataset)
    residues, names, numbers = residue_index(args.pdb)
    bad = [s.id for s in structures if not np.array_equal(s.numbers, numbers)]
    if bad:
        raise SystemExit(
            f"{len(bad)} structure(s) do not have the {len(numbers)} atoms of {args.pdb} in its order "
            f"(elements differ), e.g. {bad[:3]}"
        )
    unlabelled = [s.id for s in structures if not s.labelled]
    if unlabelled:
        raise SystemExit(f"{len(unlabelled)} structure(s) have no force labels, e.g. {unlabelled[:3]}")
    for path in args.checkpoints:
        model, _ = load_checkpoint(path)
        for structure, per in zip(structures, residue_errors(model, structures, residues), strict=True):
            worst = ", ".join(f"{names[i]} {per[i]:.1f}" for i in np.argsort(per)[::-1][:3])
            print(f"{path}  {structure.id}: largest {per.max():.2f}; worst residues {worst}")


if __name__ == "__main__":
    main()

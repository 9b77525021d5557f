"""Is the shipped potential as stiff as GFN2-xTB against twisting a peptide bond out of plane?

``python scripts/twist_scan.py --out stability/fold`` builds ACE-ALA-ALA-NME (the builder's
geometry), rotates the C-terminal side of its central ALA-ALA peptide bond rigidly about the C-N
axis (``exploration.torsion_scan``; -90 to +90 degrees) and writes the energies and torques of the
potential and of GFN2-xTB to ``twist-ala-ala.json`` and ``twist-ala-ala.png`` in ``--out``.

Villin ML/MM runs with the shipped potential have peptide bonds further from planar than AMBER14's
(mean |omega - 180| 13-16 degrees against 8, single bonds up to 60), so this checks the rigid twist.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

ANGLES = [0, 15, 30, 45, 60, 75, 90, -15, -30, -45, -60, -75, -90]


def scan(model_path: str | None) -> dict:
    import torch

    from openmmml_e2former.checkpoints import file_sha256, load_checkpoint
    from openmmml_e2former.data.exploration import torsion_scan
    from openmmml_e2former.data.generators import _atom_charges
    from openmmml_e2former.data.labellers import XTBLabeller
    from openmmml_e2former.data.peptides import build_capped_peptide
    from openmmml_e2former.fragments import fragment_ids_from_topology
    from openmmml_e2former.potential import default_weights

    torch.set_num_threads(2)
    weights = model_path or default_weights("e2former-lsr")
    model = load_checkpoint(weights)[0].float().eval()
    topology, positions = build_capped_peptide(["ALA", "ALA"])
    residues = list(topology.residues())
    c = next(a.index for a in residues[1].atoms() if a.name == "C")
    n = next(a.index for a in residues[2].atoms() if a.name == "N")
    labeller = XTBLabeller()
    rows = torsion_scan(
        model, labeller, topology, np.asarray(positions, dtype=np.float64), _atom_charges(topology),
        fragment_ids_from_topology(topology), residues, n, c, ANGLES,
    )  # fmt: skip
    rows.sort(key=lambda r: r["angle"])
    for r in rows:
        print(
            f"{r['angle']:6.0f} deg  E model {r['model_energy']:6.3f}  "
            f"E GFN2-xTB {r['reference_energy']:6.3f} eV"
        )
    return {
        "molecule": "ACE-ALA-ALA-NME", "bond": "ALA2:C-ALA3:N (C-terminal side rotated)",
        "reference": labeller.method, "weights_sha256": file_sha256(weights), "rows": rows,
    }  # fmt: skip


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    angles = [r["angle"] for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(angles, [r["reference_energy"] for r in result["rows"]], "o-", label=result["reference"])
    ax.plot(angles, [r["model_energy"] for r in result["rows"]], "s--", label="E2Former-LSR (shipped)")
    ax.set_xlabel("rigid twist of the peptide bond (degrees)")
    ax.set_ylabel("E - E(no twist) (eV)")
    ax.set_title(result["molecule"], fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/stability")
    parser.add_argument("--model-path", default=None, help="checkpoint (default: the shipped potential)")
    args = parser.parse_args()
    result = scan(args.model_path)
    result["command"] = f"python scripts/twist_scan.py --out {args.out}" + (
        f" --model-path {args.model_path}" if args.model_path else ""
    )
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "twist-ala-ala")
    with open(stem + ".json", "w") as handle:
        json.dump(result, handle, indent=1)
    plot(result, stem + ".png")
    print(f"wrote {stem}.json, {stem}.png")


if __name__ == "__main__":
    main()

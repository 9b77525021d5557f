"""Is the shipped potential as stiff as GFN2-xTB against twisting a peptide bond out of plane?

``python research/twist_scan.py --sequence ALA,ALA --out stability/fold`` builds ACE-ALA-ALA-NME
(the builder's extended geometry), rotates the C-terminal side of its central peptide bond rigidly
about the C-N axis (``openmmml_e2former.probes.torsion_scan``; -90 to +90 degrees) and writes the energies and
torques of the potential and of GFN2-xTB to ``twist-ala-ala.json`` in ``--out``; ``twist.png``
there draws every ``twist-*.json`` of the folder.

Villin ML/MM runs with the shipped potential have peptide bonds further from planar than AMBER14's
(`research/run_geometry.py`: bonds next to charged residues twisted by 25-40 degrees on average, up
to 87; none beyond 40 with AMBER14), so this checks the rigid twist, also between charged residues.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

ANGLES = [0, 15, 30, 45, 60, 75, 90, -15, -30, -45, -60, -75, -90]


def scan(sequence: list[str], model_path: str | None) -> dict:
    import torch

    from openmmml_e2former.checkpoints import file_sha256
    from openmmml_e2former.data.labellers import XTBLabeller
    from openmmml_e2former.data.peptides import build_capped_peptide
    from openmmml_e2former.fragments import fragment_ids_from_topology
    from openmmml_e2former.potential import load_network
    from openmmml_e2former.probes import torsion_scan

    torch.set_num_threads(2)
    model, weights = load_network(model_path)
    if len(sequence) != 2:
        raise SystemExit("--sequence: two residues, e.g. GLU,ASP")
    topology, positions = build_capped_peptide(sequence)
    residues = list(topology.residues())
    c = next(a.index for a in residues[1].atoms() if a.name == "C")
    n = next(a.index for a in residues[2].atoms() if a.name == "N")
    labeller = XTBLabeller()
    rows = torsion_scan(
        model, labeller, topology, np.asarray(positions, dtype=np.float64),
        fragment_ids_from_topology(topology), residues, n, c, ANGLES,
    )  # fmt: skip
    rows.sort(key=lambda r: r["angle"])
    for r in rows:
        print(
            f"{r['angle']:6.0f} deg  E model {r['model_energy']:6.3f}  "
            f"E GFN2-xTB {r['reference_energy']:6.3f} eV"
        )
    return {
        "molecule": "ACE-" + "-".join(sequence) + "-NME",
        "bond": f"{sequence[0]}2:C-{sequence[1]}3:N (C-terminal side rotated)",
        "reference": labeller.method, "weights_sha256": file_sha256(weights), "rows": rows,
    }  # fmt: skip


def plot_all(folder: str) -> str:
    """One panel per ``twist-*.json`` in ``folder`` into ``twist.png``."""
    from probe_plots import energy_curves, panels

    def draw(ax, result):
        energy_curves(ax, [r["angle"] for r in result["rows"]], result["rows"], result["reference"])
        ax.set_title(result["molecule"], fontsize=9)
        ax.set_xlabel("rigid peptide-bond twist (deg)")

    return panels(folder, "twist-*.json", draw, "E - E(no twist) (eV)", "twist.png", 3.3, 7, sharey=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sequence", default="ALA,ALA", help="the two residues of the twisted bond")
    parser.add_argument("--out", default="runs/stability")
    parser.add_argument("--model-path", default=None, help="checkpoint (default: the shipped potential)")
    args = parser.parse_args()
    sequence = args.sequence.upper().split(",")
    result = scan(sequence, args.model_path)
    result["command"] = f"python research/twist_scan.py --sequence {args.sequence} --out {args.out}" + (
        f" --model-path {args.model_path}" if args.model_path else ""
    )
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "twist-" + "-".join(sequence).lower())
    with open(stem + ".json", "w") as handle:
        json.dump(result, handle, indent=1)
    print(f"wrote {stem}.json and {plot_all(args.out)} (every twist-*.json in {args.out})")


if __name__ == "__main__":
    main()

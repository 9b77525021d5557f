"""At a bond that broke in a run, is the potential or its reference to blame?

``python research/bond_stretch.py stability/villin-20ps-al3-run --bond 32:HZ1 --piece 18-35
--out stability/breaks``: the bond (``32:HZ1``: an X-H bond, 1-based residue position and hydrogen
name; ``5:CG-CB``: the side of ASP5's CB-CG bond that holds CG) is stretched (default 1.0-1.6 Å) in
an H-capped piece (residues ``first-last``) of a saved frame of the run folder's MD stage, and the
energy and force along it are computed by the potential and by GFN2-xTB
(``openmmml_e2former.probes.bond_stretch_scan``). Writes
``stretch-<run>-<bond>-<piece>-<weights>.json`` into ``--out``. ``python research/bond_stretch.py
--plot --out stability/breaks`` draws every ``stretch-*.json`` in ``--out`` into ``stretch.png``.

(Until this file was split off, these were ``scripts/stability.py stretch`` and ``stretch-plot``;
the JSON files in ``stability/breaks`` and ``stability/bonds`` record those commands.)
"""

from __future__ import annotations

import argparse
import json
import os


def stretch(folder: str, model_path: str | None, bond: str, piece: str, frame: int, distances) -> dict:
    """Model vs GFN2-xTB energy and force along one bond of a run folder's saved frame, stretched
    in a piece of the protein; ``bond`` is ``RES:ATOM`` for an X-H bond (``32:HZ1``) or
    ``RES:MOVED-FIXED`` for any other bond of one residue (``5:CG-CB``: ASP5's carboxylate moves
    away from its CB); ``piece`` is a residue range ``first-last``."""
    import torch

    from openmmml_e2former.data.exploration import run_folder_frames
    from openmmml_e2former.data.labellers import XTBLabeller
    from openmmml_e2former.potential import load_network
    from openmmml_e2former.probes import bond_stretch_scan

    torch.set_num_threads(2)
    model, _ = load_network(model_path)
    top, fragments, frames, stage, _ = run_folder_frames(folder)
    residues = list(top.residues())
    position, names = bond.split(":")
    residue = residues[int(position) - 1]
    name, _, partner = names.partition("-")
    moved = next(a for a in residue.atoms() if a.name == name)
    if partner:
        fixed = next(a for a in residue.atoms() if a.name == partner)
    else:
        fixed = next(b for a, b in top.bonds() for a, b in ((a, b), (b, a)) if a == moved)
    first, last = (int(v) for v in piece.split("-"))
    labeller = XTBLabeller()
    rows = bond_stretch_scan(
        model, labeller, top, frames[frame], fragments, residues[first - 1 : last],
        moved.index, fixed.index, distances,
    )  # fmt: skip
    label = f"{residue.name}{position}:{name}-{fixed.name}"
    print(f"{label} in residues {piece} of frame {frame} ({stage}); energies relative to {distances[0]} Å")
    print(" d (Å)   E model   E GFN2-xTB (eV)   F model   F GFN2-xTB (eV/Å, + = outwards)")
    for r in rows:
        print(
            f"{r['distance']:6.2f} {r['model_energy']:9.3f} {r['reference_energy']:11.3f}"
            f"        {r['model_force']:8.2f} {r['reference_force']:9.2f}"
        )
    return {
        "folder": folder, "stage": stage, "frame": frame, "bond": label, "residues": piece,
        "reference": labeller.method, "rows": rows,
    }  # fmt: skip


def stretch_plot(folder: str) -> str:
    """One panel per ``stretch-*.json`` in ``folder``: energy along the stretch, potential vs GFN2-xTB."""
    from probe_plots import energy_curves, panels

    def draw(ax, r):
        energy_curves(ax, [row["distance"] for row in r["rows"]], r["rows"], r["reference"])
        ax.axhline(0.0, color="grey", lw=0.5)
        run = os.path.basename(os.path.normpath(r["folder"])).replace("villin-20ps-", "")
        ax.set_title(f"{r['bond']}, residues {r['residues']}\n{run}, frame {r['frame']}", fontsize=9)
        ax.set_xlabel("bond length (Å)")

    return panels(folder, "stretch-*.json", draw, "E - E(first distance) (eV)", "stretch.png", 3.6, 8)


def main() -> None:
    from openmmml_e2former.checkpoints import file_sha256
    from openmmml_e2former.potential import default_weights

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", nargs="?", help="the e2former run folder")
    parser.add_argument("--plot", action="store_true", help="draw every stretch-*.json in --out")
    parser.add_argument("--bond", default="32:HZ1", help="RES:H or RES:MOVED-FIXED")
    parser.add_argument("--piece", default="18-35", help="residues first-last of the cut piece")
    parser.add_argument("--frame", type=int, default=-1, help="saved frame (default: the last)")
    parser.add_argument("--distances", default="1.0,1.15,1.3,1.45,1.6", help="Å, comma-separated")
    parser.add_argument("--out", default="runs/stability")
    parser.add_argument("--model-path", default=None, help="checkpoint (default: the shipped potential)")
    args = parser.parse_args()
    if args.plot:
        print(f"wrote {stretch_plot(args.out)}")
        return
    if not args.folder:
        parser.error("give a run folder (or --plot)")
    distances = [float(v) for v in args.distances.split(",")]
    result = stretch(args.folder, args.model_path, args.bond, args.piece, args.frame, distances)
    result["weights_sha256"] = file_sha256(args.model_path or default_weights("e2former-lsr"))
    result["command"] = (
        f"python research/bond_stretch.py {args.folder} --bond {args.bond} --piece {args.piece} "
        f"--frame {args.frame} --out {args.out} --distances {args.distances}"
        + (f" --model-path {args.model_path}" if args.model_path else "")
    )
    run_name = os.path.basename(os.path.normpath(args.folder))
    weights = os.path.splitext(os.path.basename(args.model_path))[0] if args.model_path else "shipped"
    tag = args.bond.replace(":", "-")
    path = os.path.join(args.out, f"stretch-{run_name}-{tag}-{args.piece}-{weights}.json")
    os.makedirs(args.out, exist_ok=True)
    with open(path + ".tmp", "w") as handle:
        json.dump(result, handle, indent=1)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Local geometry of the protein in run folders, frame by frame, to compare an ML/MM run with a
classical one: heavy-atom bond lengths and angles against the prepared structure, peptide-bond
planarity, and the kinetic temperature of protein and solvent in the final state.

``python research/run_geometry.py stability/villin-20ps-hcons-run stability/villin-20ps-mm-run
--out stability/fold/geometry.json`` prints a table per run and writes the numbers
(``openmmml_e2former.analysis.geometry``).
"""

from __future__ import annotations

import argparse
import json
import os

from openmmml_e2former.analysis.geometry import final_temperatures, frame_geometry, load_protein, most_twisted


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", help="e2former run folders (with a finished MD stage)")
    parser.add_argument("--out", default="runs/stability/geometry.json")
    args = parser.parse_args()
    result = {"command": "python research/run_geometry.py " + " ".join(args.folders) + f" --out {args.out}"}
    for folder in args.folders:
        traj, reference, stage = load_protein(folder)
        rows = frame_geometry(traj, reference)
        temperatures = final_temperatures(folder, stage) if os.path.exists(
            os.path.join(folder, "stages", stage, "state.xml")
        ) else None  # fmt: skip
        twisted = most_twisted(traj)
        result[folder] = {"frames": rows, "final_temperature_K": temperatures, "most_twisted": twisted}
        print(f"{folder} ({traj.n_frames} frames of {stage}; final T: {temperatures})")
        print("  frame   bond |dr| (Å)   angle |da| (deg)   omega twist mean / max (deg)")
        for r in rows[:: max(1, len(rows) // 8)] + [rows[-1]]:
            print(
                f"  {r['frame']:5d}   {r['bond_change_angstrom']:.4f}          "
                f"{r['angle_change_degrees']:5.2f}              "
                f"{r['omega_twist_mean_degrees']:5.1f} / {r['omega_twist_max_degrees']:5.1f}"
            )
        print("  most twisted peptide bonds (|omega - 180| mean / max, frames over 40 deg):")
        for t in twisted:
            print(
                f"    {t['bond']:14s} {t['mean_degrees']:5.1f} / {t['max_degrees']:5.1f}  "
                f"{t['frames_over_40']}"
            )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

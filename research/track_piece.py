"""Does the shipped potential follow GFN2-xTB along the path a run took?

``python research/track_piece.py stability/villin-20ps-hcons-run --piece 1-12 --every 2 --out stability/fold``
cuts residues ``first-last`` (1-based positions in the protein, H-capped) from every ``--every``-th
saved frame of the run folder's MD stage and computes the piece's energy and forces with the
potential and with GFN2-xTB (tblite). It writes ``track-<run>-<piece>.json`` (per frame: time,
both energies relative to the first frame, force MAE and largest error over the piece's own atoms)
and ``track-<run>-<piece>.png`` into ``--out``. ``python research/track_piece.py --compare A.json
B.json --out stability/fold`` draws the same piece in two runs of one protein on one energy scale
(both relative to the first frame of A) into ``compare-<piece>.png``.

If the two energies rise and fall together while the piece changes shape (a helix unravelling),
the potential reproduces its reference on that path, and the change is the reference's (or the
ML/MM embedding's); if they part, the potential drives it.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def track(folder: str, piece: str, every: int, model_path: str | None) -> dict:
    import torch

    from openmmml_e2former.checkpoints import file_sha256
    from openmmml_e2former.data.exploration import run_folder_frames, stage_frame_times
    from openmmml_e2former.data.labellers import XTBLabeller
    from openmmml_e2former.potential import load_network
    from openmmml_e2former.probes import piece_along_frames, piece_summary

    torch.set_num_threads(2)
    model, weights = load_network(model_path)
    top, fragments, frames, stage, _ = run_folder_frames(folder)
    first, last = (int(v) for v in piece.split("-"))
    residues = list(top.residues())[first - 1 : last]
    if not residues or last > top.getNumResidues() or first < 1:
        raise SystemExit(f"--piece {piece}: the protein has residues 1-{top.getNumResidues()}")
    chosen = list(range(0, len(frames), every))
    times = stage_frame_times(folder, stage, len(frames))
    labeller = XTBLabeller()
    start = time.perf_counter()
    atoms = sum(1 for r in residues for _ in r.atoms())
    print(f"{len(chosen)} frames of {stage}, residues {piece} ({atoms} atoms), model and GFN2-xTB on each")

    def progress(row):
        print(f"  frame {chosen[row['frame']]} ({times[chosen[row['frame']]]:.1f} ps): force MAE "
              f"{row['force_mae']:.3f} eV/Å, {time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip

    frames = [frames[f] for f in chosen]
    rows = piece_along_frames(model, labeller, top, frames, fragments, residues, progress)
    for row, f in zip(rows, chosen, strict=True):
        row["frame"], row["time_ps"] = f, times[f]
        print(
            f"{row['time_ps']:6.1f} ps  E model {row['model_energy']:7.3f}  E GFN2-xTB "
            f"{row['reference_energy']:7.3f} eV  force MAE {row['force_mae']:.3f} eV/Å"
        )
    names = "".join(f"{r.name}{first + i} " for i, r in enumerate(residues)).strip()
    return {
        "folder": folder, "stage": stage, "residues": piece, "names": names, "reference": labeller.method,
        "weights_sha256": file_sha256(weights), "seconds": time.perf_counter() - start,
        "summary": piece_summary(rows), "rows": rows,
    }  # fmt: skip


def plot(result: dict, path: str) -> None:
    from probe_plots import energy_curves, pyplot, save

    t = [r["time_ps"] for r in result["rows"]]
    fig, (top, bottom) = pyplot().subplots(2, 1, figsize=(6, 5), sharex=True)
    energy_curves(top, t, result["rows"], result["reference"])
    top.set_ylabel("E - E(first frame) (eV)")
    top.set_title(f"residues {result['residues']} of {os.path.basename(result['folder'])}", fontsize=9)
    top.legend(fontsize=8)
    bottom.plot(t, [r["force_mae"] for r in result["rows"]], "o-")
    bottom.set_ylabel("force MAE (eV/Å)")
    bottom.set_xlabel("time (ps)")
    save(fig, path)


def compare_plot(paths: list[str], out: str) -> str:
    """One piece in several runs: absolute energies relative to the first run's first frame."""
    from probe_plots import pyplot, save

    results = []
    for path in paths:
        with open(path) as handle:
            results.append(json.load(handle))
    if len({r["residues"] for r in results}) != 1:
        raise SystemExit("--compare: the files track different pieces")
    zero = {k: results[0]["rows"][0][k + "_energy_absolute"] for k in ("model", "reference")}
    fig, (top, bottom) = pyplot().subplots(2, 1, figsize=(6, 5), sharex=True)
    for i, r in enumerate(results):
        colour = f"C{i % 10}"
        run = os.path.basename(os.path.normpath(r["folder"]))
        t = [row["time_ps"] for row in r["rows"]]
        for kind, style, label in (("reference", "o-", r["reference"]), ("model", "s--", "potential")):
            e = [row[kind + "_energy_absolute"] - zero[kind] for row in r["rows"]]
            top.plot(t, e, style, color=colour, ms=4, label=f"{run}: {label}")
        bottom.plot(t, [row["force_mae"] for row in r["rows"]], "o-", color=colour, ms=4, label=run)
    top.set_ylabel("E - E(first frame of the first run) (eV)")
    top.set_title(f"residues {results[0]['residues']}", fontsize=9)
    top.legend(fontsize=7)
    bottom.set_ylabel("force MAE (eV/Å)")
    bottom.set_xlabel("time (ps)")
    bottom.legend(fontsize=7)
    return save(fig, os.path.join(out, f"compare-{results[0]['residues']}.png"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", nargs="?", help="an e2former run folder")
    parser.add_argument("--piece", help="residues first-last (1-based) of the cut piece")
    parser.add_argument("--compare", nargs="+", help="track-*.json files of one piece in several runs")
    parser.add_argument("--every", type=int, default=1, help="every N-th saved frame")
    parser.add_argument("--out", default="runs/stability")
    parser.add_argument("--model-path", default=None, help="checkpoint (default: the shipped potential)")
    args = parser.parse_args()
    if args.compare:
        print(f"wrote {compare_plot(args.compare, args.out)}")
        return
    if not (args.folder and args.piece):
        parser.error("give a run folder and --piece (or --compare JSON...)")
    result = track(args.folder, args.piece, args.every, args.model_path)
    result["command"] = (
        f"python research/track_piece.py {args.folder} --piece {args.piece} --every {args.every} "
        f"--out {args.out}" + (f" --model-path {args.model_path}" if args.model_path else "")
    )
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"track-{os.path.basename(os.path.normpath(args.folder))}-{args.piece}")
    with open(stem + ".json", "w") as handle:
        json.dump(result, handle, indent=1)
    plot(result, stem + ".png")
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {stem}.json, {stem}.png")


if __name__ == "__main__":
    main()

"""Ship a trained run as the default potential: checkpoint + metrics + test subset + training curve.

Usage::

    python scripts/ship_potential.py runs/e2former-lsr-al1 --previous runs/e2former-lsr \
        --dataset datasets/gfn2-peptides.extxyz.gz datasets/gfn2-active1.extxyz.gz \
        --heldout datasets/gfn2-active1-heldout.extxyz.gz --heldout-labels "ML-MD frames" \
        --labels "stage 1,active learning 1"

``RUN`` is the last training stage (its ``best.pt`` is shipped); ``--previous`` names the earlier
stages it continued from, oldest first (their logs go into the metrics and the curve).

Writes ``openmmml_e2former/potentials/e2former-lsr.pt`` (our checkpoint format, EMA weights of the
best validation epoch, metadata with data summary and validation/test errors),
``openmmml_e2former/potentials/e2former-lsr.metrics.json``, ``datasets/test-subset.extxyz.gz``
(every k-th test structure, used by tests/test_shipped_potential.py) and
``docs/training_curve.png``.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os

import torch

from openmmml_e2former.checkpoints import file_sha256, load_checkpoint, save_checkpoint
from openmmml_e2former.data.extxyz import read_structures, write_structures
from openmmml_e2former.data.splits import group_key
from openmmml_e2former.train.batching import predict, to_sample
from openmmml_e2former.train.metrics import ErrorAccumulator

SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 11: "Na", 16: "S", 17: "Cl"}


def errors(model, structures) -> ErrorAccumulator:
    acc = ErrorAccumulator()
    samples = [to_sample(s) for s in structures]
    for i in range(0, len(samples), 8):
        chunk = samples[i : i + 8]
        energies, forces = predict(model, chunk)
        for s, e, f in zip(chunk, energies, forces, strict=True):
            acc.add(float(e.detach().double() - s.energy), s.num_atoms, (f.detach() - s.forces).numpy())
    return acc


def data_summary(structures, split: dict) -> dict:
    elements = collections.Counter(int(z) for s in structures for z in s.numbers)
    kinds = collections.Counter(s.source.split(",")[0].split(":")[0] for s in structures)
    sizes = [s.num_atoms for s in structures]
    charges = collections.Counter(int(s.charge) for s in structures)
    return {
        "structures": len(structures),
        "atoms": int(sum(sizes)),
        "molecules": len({s.molecule for s in structures}),
        "split_groups": len({group_key(s) for s in structures}),
        "atoms_per_structure": {
            "min": min(sizes),
            "max": max(sizes),
            "mean": round(sum(sizes) / len(sizes), 1),
        },
        "element_atom_counts": {SYMBOLS.get(z, str(z)): n for z, n in sorted(elements.items())},
        "total_charges": {str(q): n for q, n in sorted(charges.items())},
        "kinds": dict(kinds),
        "split_sizes": {k: len(v) for k, v in split.items()},
        "level_of_theory": sorted({s.labels.get("method", "?") for s in structures}),
        "program": sorted(
            {f"{s.labels.get('program')} {s.labels.get('program_version')}" for s in structures}
        ),
        "label_cpu_seconds": round(sum(float(s.labels.get("label_seconds", 0)) for s in structures), 1),
    }


def wall_seconds(run: str) -> float | None:
    """Training wall time of a run over all its resumed pieces (``last.pt``; None for runs written
    before the trainer recorded it, and for committed run folders that keep ``best.pt`` only)."""
    path = os.path.join(run, "last.pt")
    if not os.path.exists(path):
        print(f"{run}: no last.pt, its training wall time is not recorded")
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state.get("elapsed_seconds")


def read_logs(run: str) -> tuple[list[dict], list[dict]]:
    """(steps.csv rows, epochs.csv rows) of a training run folder."""
    with open(os.path.join(run, "steps.csv")) as handle:
        steps = list(csv.DictReader(handle))
    with open(os.path.join(run, "epochs.csv")) as handle:
        epochs = list(csv.DictReader(handle))
    return steps, epochs


def join_stages(earlier: list[dict], folders: list[str]) -> list:
    """The training stages, oldest first: ``earlier`` (``stages`` of an earlier metrics file), less
    any stage whose run is one of ``folders`` (shipping the same run twice, e.g. with
    ``--metrics-only``, must not list it twice), then the run folders themselves."""
    kept = [stage for stage in earlier if stage["run"] not in folders]
    if len(kept) < len(earlier):
        print(f"--previous-metrics: {len(earlier) - len(kept)} stage(s) replaced by the run folders given")
    return [*kept, *folders]


def plot_curve(runs: list, path: str, labels: list[str] | None = None) -> list[int]:
    """Training loss and validation errors of the stages in ``runs``, one step axis (each stage's
    steps continue from the last step of the one before; dashed lines mark the stage starts).
    A stage is a run folder, or a ``stages`` entry of an earlier metrics file (its validation
    errors by epoch only: no per-step loss). Returns each stage's first step on the joint axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    offset, window, starts = 0, 25, []
    for k, run in enumerate(runs):
        starts.append(offset)
        steps, epochs = read_logs(run) if isinstance(run, str) else ([], run["epochs"])
        x = [offset + int(r["step"]) for r in steps]
        y = [float(r["loss"]) for r in steps]
        smooth = [sum(y[max(0, i - window + 1) : i + 1]) / min(i + 1, window) for i in range(len(y))]
        tag = labels[k] if labels and k < len(labels) else f"stage {k + 1}"
        a.semilogy(x, y, lw=0.5, alpha=0.4, color="C0", label="per step" if k == 0 else None)
        a.semilogy(x, smooth, lw=1.5, color="C1", label=f"running mean ({window})" if k == 0 else None)
        es = [offset + int(r["step"]) for r in epochs]
        series = [
            ("val_force_mae", "o-", "C0", "force MAE (eV/Å)"),
            ("val_energy_mae", "s-", "C1", "energy MAE (eV/atom)"),
        ]
        for key, style, color, label in series:
            values = [float(r[key]) for r in epochs]
            b.plot(es, values, style, ms=3, color=color, label=label if k == 0 else None)
        if k > 0:
            for axis in (a, b):
                axis.axvline(offset, ls="--", color="grey", lw=0.8)
                axis.text(offset, 0.02, f" {tag}", transform=axis.get_xaxis_transform(), fontsize=8)
        offset = x[-1] if x else (es[-1] if es else offset)
    a.set_xlabel("optimiser step")
    a.set_ylabel("training loss" + (" (each stage's own loss weights)" if len(runs) > 1 else ""))
    a.legend()
    b.set_xlabel("optimiser step")
    b.set_ylabel("validation error (EMA weights)")
    b.set_yscale("log")
    b.legend()
    fig.suptitle("E2Former-LSR (small) on GFN2-xTB peptide data")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return starts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", help="the last training stage's run folder (its best.pt is shipped)")
    parser.add_argument("--previous", action="append", default=[], help="earlier stages, oldest first")
    parser.add_argument(
        "--previous-metrics",
        default=None,
        help="an earlier metrics JSON (e.g. the shipped potential's) whose stages come before --previous: "
        "for a workspace without the earlier run folders (their epochs and times are kept; the curve "
        "shows their validation errors by epoch, without the per-step loss)",
    )
    parser.add_argument("--dataset", required=True, nargs="+", help="the run's dataset file(s)")
    parser.add_argument(
        "--heldout",
        nargs="+",
        default=[],
        help="extra held-out structure files (never trained on) to report, e.g. "
        "active-learning frames of validation/test molecules",
    )
    parser.add_argument(
        "--heldout-labels", default=None, help="comma-separated names of the --heldout files for the card"
    )
    parser.add_argument("--out", default="openmmml_e2former/potentials/e2former-lsr.pt")
    parser.add_argument("--subset", default="datasets/test-subset.extxyz.gz")
    parser.add_argument("--subset-size", type=int, default=16)
    parser.add_argument("--train-every", type=int, default=5, help="every k-th training structure")
    parser.add_argument(
        "--metrics-only",
        action="store_true",
        help="the shipped checkpoint already holds RUN's best weights: rewrite the metrics, subset and "
        "curve only (the checkpoint file, its metadata with weights_from, and so its SHA-256, stay as "
        "they are)",
    )
    parser.add_argument("--curve", default="docs/training_curve.png")
    parser.add_argument("--labels", default=None, help="comma-separated stage names for the curve")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model, meta = load_checkpoint(os.path.join(args.run, "best.pt"))
    # the digest of RUN/best.pt names the shipped weights only if shipping leaves them as they are
    as_trained = all(v.dtype == torch.float32 for v in model.state_dict().values() if v.is_floating_point())
    model = model.float()
    structures = [s for path in args.dataset for s in read_structures(path)]
    with open(os.path.join(args.run, "splits.json")) as handle:
        split_ids = json.load(handle)
    by_id = {s.id: s for s in structures}
    split = {k: [by_id[i] for i in v] for k, v in split_ids.items()}
    result = {"data": data_summary(structures, split_ids)}
    for side in ("val", "test"):
        acc = errors(model, split[side])
        result[side] = {"overall": acc.summary(), "by_size": acc.by_size()}
    names = args.heldout_labels.split(",") if args.heldout_labels else args.heldout
    if len(names) != len(args.heldout):
        raise SystemExit(f"--heldout-labels names {len(names)} sets for {len(args.heldout)} --heldout files")
    result["heldout"] = []
    for path, name in zip(args.heldout, names, strict=True):
        acc = errors(model, read_structures(path))
        result["heldout"].append(
            {"file": path, "label": name, "overall": acc.summary(), "by_size": acc.by_size()}
        )
    # training-split errors (a subset) tell under- from overfitting
    result["train_subset"] = {
        "every": args.train_every,
        **errors(model, split["train"][:: args.train_every]).summary(),
    }
    step = max(1, len(split["test"]) // args.subset_size)
    subset = split["test"][::step][: args.subset_size]
    write_structures(args.subset, subset)
    result["test_subset"] = {"file": args.subset, **errors(model, subset).summary()}
    earlier = []
    if args.previous_metrics:
        with open(args.previous_metrics) as handle:
            earlier = json.load(handle)["stages"]
    runs = join_stages(earlier, [*args.previous, args.run])
    result["stages"] = [
        run
        if isinstance(run, dict)
        else {"run": run, "epochs": read_logs(run)[1], "seconds": wall_seconds(run)}
        for run in runs
    ]
    result["epochs"] = result["stages"][-1]["epochs"]
    # runs made with RUN/best.pt itself (e.g. a candidate's stability run) used these very weights:
    # the model card accepts their records by this digest as well as the shipped file's
    source = os.path.join(args.run, "best.pt")
    if as_trained:
        meta["weights_from"] = {"file": source, "sha256": file_sha256(source)}
    else:
        meta.pop("weights_from", None)
        print(f"{source} is not float32: the shipped weights differ from it, no weights_from recorded")
    meta.update(
        name="e2former-lsr",
        data_summary=result["data"],
        validation_errors=result["val"]["overall"],
        test_errors=result["test"]["overall"],
        test_subset=result["test_subset"],
    )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    if args.metrics_only:
        shipped, _ = load_checkpoint(args.out)
        same = all(torch.equal(v, model.state_dict()[k].to(v.dtype)) for k, v in shipped.state_dict().items())
        if not same:
            raise SystemExit(f"--metrics-only: {args.out} does not hold the weights of {args.run}/best.pt")
    else:
        save_checkpoint(model, args.out, meta)
    with open(args.out.replace(".pt", ".metrics.json"), "w") as handle:
        json.dump(result, handle, indent=2)
    plot_curve(runs, args.curve, args.labels.split(",") if args.labels else None)
    print(json.dumps({k: result[k] for k in ("train_subset", "val", "test", "test_subset")}, indent=1))
    written = "kept" if args.metrics_only else "wrote"
    print(
        f"{written} {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB); wrote {args.subset}, {args.curve}"
    )


if __name__ == "__main__":
    main()

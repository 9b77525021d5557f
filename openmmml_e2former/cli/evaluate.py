"""``e2former evaluate MODEL INPUT...`` (alias ``eval``): energies and forces of a checkpoint on
structures and, where the structures carry reference labels, its errors (``DESCRIPTION``).

The arguments and the report only: reading the inputs and computing the predictions and errors is
:func:`openmmml_e2former.evaluation.evaluate`, whose result is the command's JSON.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..model.config import ENERGY_UNITS

DESCRIPTION = """\
Energies and forces of a checkpoint on every structure of the inputs and, where the
structures carry reference labels, the errors.

Inputs (one or more):
  * a dataset of this project (extended XYZ, optionally .gz, or a folder of them): its
    fragment ids, charges and, once labelled, REF_energy (eV) and REF_forces (eV/A);
  * any other extended-XYZ file (no id/fragment_id fields, e.g. written by ASE): per-atom
    cluster_ids (the authors' key) or fragment_ids and info charge are used when present,
    otherwise BRICS fragments from bonds found in the coordinates; a periodic frame
    (pbc="T T T") is evaluated with its cell;
  * an .npz with the authors' fixture keys: atomic_numbers [N] or [B, N], positions [N, 3]
    or [B, N, 3] (A), cluster_ids [N] or [B, N] (else BRICS), optional cluster_centers
    [C, 3] or [B, C, 3] (A) and charge; its labels are not read.

--fixed-centers holds fragment centres fixed (given ones, else each fragment's mean
position), as the authors' code does: forces are then -dE/dpos at fixed centres. Without
it the centres move with the atoms (exact gradients, as in OpenMM).

Output: for labelled inputs, Markdown tables of the errors (by size and overall; per
molecule with --by-molecule); otherwise each structure's energy, then its forces one atom
a line. --json alone gives the report as JSON instead of text; --json PATH keeps the text
and writes the whole result to PATH as JSON (per-structure predictions, and the errors when
there are labels); -o FILE sends the report to FILE instead of stdout."""

STDOUT = "-"  # ``--json`` without a path


def add_parser(sub) -> None:
    ev = sub.add_parser(
        "evaluate",
        aliases=["eval"],
        help="energies and forces of a checkpoint on structures; its errors where they have labels",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("model", help="checkpoint (ours or the authors'), or a weights name")
    ev.add_argument(
        "inputs", nargs="+", metavar="input", help="dataset file or folder, other extended XYZ, or .npz"
    )
    ev.add_argument("--head", default=None, help="energy head of an authors' checkpoint")
    ev.add_argument("--reference-energies", action="store_true", help="absolute energies (see convert)")
    ev.add_argument(
        "--fixed-centers", action="store_true", help="hold fragment centres fixed (the authors' semantics)"
    )
    ev.add_argument(
        "--precision",
        choices=["single", "double"],
        default="single",
        help="float32 (default, as trained) or float64",
    )
    ev.add_argument(
        "--units",
        choices=ENERGY_UNITS,
        default=None,
        help="unit of the predicted energies and forces (default: the model's); errors are always "
        "in meV/atom (JSON: eV/atom) and eV/Å",
    )
    ev.add_argument("--split", default=None, help="a splits JSON (train/val/test ids): evaluate one side")
    ev.add_argument("--side", choices=["train", "val", "test"], default="test", help="side of --split")
    ev.add_argument("--by-molecule", action="store_true", help="also a table of errors per molecule")
    ev.add_argument(
        "--json",
        nargs="?",
        const=STDOUT,
        default=None,
        metavar="PATH",
        help="without PATH: the report as JSON instead of text; with PATH: also write the whole "
        "result (predictions, and errors when labelled) there as JSON",
    )
    ev.add_argument("-o", "--output", default=None, help="write the report to this file instead of stdout")
    ev.set_defaults(func=run_evaluate)


def run_evaluate(args) -> None:
    import json

    from ..evaluation import evaluate

    result = evaluate(
        args.model,
        args.inputs,
        head=args.head,
        reference_energies=args.reference_energies,
        precision=args.precision,
        fixed_centres=args.fixed_centers,
        units=args.units,
        split=args.split,
        side=args.side,
    )
    labelled = "overall" in result
    if labelled and result["overall"]["count"] < len(result["structures"]):
        print(
            f"note: errors of the {result['overall']['count']} of {len(result['structures'])} "
            "structures with labels",
            file=sys.stderr,
        )
    if args.json == STDOUT:
        text = json.dumps(result, indent=1)
    elif labelled:
        text = format_errors(result, args.by_molecule)
    else:
        text = format_predictions(result)
    _emit(text, args.output)
    if args.json not in (None, STDOUT):
        _emit(json.dumps(result, indent=1), args.json)


def format_errors(result: dict, by_molecule: bool) -> str:
    """Markdown tables of the errors: by size and overall, then (``by_molecule``) per molecule."""
    from ..train.metrics import format_table

    text = format_table(result["by_size"] + [{"atoms": "all", **result["overall"]}])
    if by_molecule:
        text += "\n\n" + format_table(result["by_molecule"], key="molecule")
    return text


def format_predictions(result: dict) -> str:
    """Plain-text report: one energy line per structure, then its forces (one atom a line)."""
    lines = [
        f"# energy in {result['energy_unit']}, forces in {result['force_unit']}, "
        f"fixed centres: {result['fixed_centers']}, energy reference: {result['energy_reference']}"
    ]
    for item in result["structures"]:
        lines.append(f"structure {item['index']}: {item['n_atoms']} atoms, energy {item['energy']:.10g}")
        lines += [f"  {fx: .8e} {fy: .8e} {fz: .8e}" for fx, fy, fz in item["forces"]]
    return "\n".join(lines)


def _emit(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text + "\n")
        return
    tmp = f"{output}.tmp-{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, output)
    print(f"wrote {output}", file=sys.stderr)

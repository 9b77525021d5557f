"""``e2former evaluate MODEL INPUT...`` (alias ``eval``): energies and forces of a checkpoint on
structures and, where the structures carry reference labels, its errors (``DESCRIPTION``).

Datasets of this project are read only through :func:`openmmml_e2former.data.extxyz.read_structures`;
other extended-XYZ files are handed to :func:`openmmml_e2former.data.extxyz.from_atoms` once the
fields they lack (id, molecule, fragment ids) are filled in.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

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


@dataclass
class Entry:
    """A structure to evaluate, with what the dataset format cannot hold."""

    structure: object  # data.structure.Structure
    box: object = None  # [3, 3] Å (periodic extended XYZ)
    centres: object = None  # [C, 3] Å (the fixture's cluster_centers)


def run_evaluate(args) -> None:
    import json

    import torch

    from ..checkpoints import load_checkpoint
    from ..units import KJ_PER_MOL
    from ..weights import resolve_weights

    entries = [entry for path in args.inputs for entry in read_inputs(path)]
    if args.split:
        with open(args.split) as handle:
            wanted = set(json.load(handle)[args.side])
        entries = [e for e in entries if e.structure.id in wanted]
        if not entries:
            raise ValueError(f"none of the {len(wanted)} selected ids is in {', '.join(args.inputs)}")
    model, metadata = load_checkpoint(resolve_weights(args.model), args.head, args.reference_energies)
    dtype = torch.float64 if args.precision == "double" else torch.float32
    model = model.to(dtype)
    unit = args.units or model.config.energy_unit
    scale = KJ_PER_MOL[model.config.energy_unit] / KJ_PER_MOL[unit]
    to_ev = KJ_PER_MOL[model.config.energy_unit] / KJ_PER_MOL["eV"]
    predictions = [energy_and_forces(model, entry, args.fixed_centers, dtype) for entry in entries]
    result = {
        "model": args.model,
        "inputs": list(args.inputs),
        "energy_unit": unit,
        "force_unit": f"{unit}/Angstrom",
        "fixed_centers": bool(args.fixed_centers),
        "precision": args.precision,
        "energy_reference": metadata.get("energy_reference", "unknown"),
        "structures": [
            _prediction(k, e.structure, energy * scale, forces * scale)
            for k, (e, (energy, forces)) in enumerate(zip(entries, predictions, strict=True))
        ],
    }
    labelled = [(e.structure, p) for e, p in zip(entries, predictions, strict=True) if e.structure.labelled]
    if labelled:
        if len(labelled) < len(entries):
            print(
                f"note: errors of the {len(labelled)} of {len(entries)} structures with labels",
                file=sys.stderr,
            )
        result.update(errors(labelled, to_ev))
    if args.json == STDOUT:
        text = json.dumps(result, indent=1)
    elif labelled:
        text = format_errors(result, args.by_molecule)
    else:
        text = format_predictions(result)
    _emit(text, args.output)
    if args.json not in (None, STDOUT):
        _emit(json.dumps(result, indent=1), args.json)


def _prediction(k: int, structure, energy: float, forces) -> dict:
    return {
        "index": k,
        "id": structure.id,
        "molecule": structure.molecule,
        "n_atoms": structure.num_atoms,
        "energy": float(energy),
        "forces": forces.tolist(),
    }


def errors(labelled: list, to_ev: float) -> dict:
    """``overall``, ``by_size`` and ``by_molecule`` errors (eV/atom, eV/Å) of ``(structure,
    (energy, forces))`` pairs, predictions in the model's unit times ``to_ev`` = eV."""
    from ..data.splits import group_key
    from ..train.metrics import ErrorAccumulator

    acc = ErrorAccumulator()
    for s, (energy, forces) in labelled:
        acc.add(energy * to_ev - s.energy, s.num_atoms, forces * to_ev - s.forces, group_key(s))
    return {"overall": acc.summary(), "by_size": acc.by_size(), "by_molecule": acc.by_group()}


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


def energy_and_forces(model, entry: Entry, fixed_centres: bool, dtype):
    """(energy, forces [N, 3] numpy float64) of one structure in the model's units (Å)."""
    import torch

    s = entry.structure
    positions = torch.tensor(s.positions, dtype=dtype).requires_grad_(True)
    numbers = torch.tensor(s.numbers, dtype=torch.long)
    fragments = torch.tensor(s.fragment_ids, dtype=torch.long)
    charge = torch.tensor(float(s.charge), dtype=dtype)
    box = None if entry.box is None else torch.tensor(entry.box, dtype=dtype)
    centres = None
    if fixed_centres:
        centres = entry.centres
        if centres is None:
            centres = fragment_means(s.positions, s.fragment_ids)
        centres = torch.tensor(centres, dtype=dtype)
    energy = model(positions, numbers, fragments, charge, box, centres)
    (gradient,) = torch.autograd.grad(energy, positions)
    return float(energy.detach()), -gradient.detach().double().numpy()


def fragment_means(positions, fragment_ids):
    """Mean position [C, 3] of each fragment 0..C-1 (float64, the fixture's convention)."""
    import numpy as np

    positions = np.asarray(positions, dtype=np.float64)
    ids = np.asarray(fragment_ids)
    return np.stack([positions[ids == c].mean(axis=0) for c in range(int(ids.max()) + 1)])


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #


def read_inputs(path: str) -> list[Entry]:
    """The structures of one input (see the module docstring)."""
    from ..data.extxyz import read_structures

    if path.lower().endswith(".npz"):
        if not os.path.exists(path):
            raise FileNotFoundError(f"input file not found: {path}")
        return read_npz(path)
    try:
        return [Entry(s) for s in read_structures(path)]
    except ValueError:
        foreign = read_foreign_xyz(path)
        if foreign is None:
            raise
        return foreign


def read_foreign_xyz(path: str) -> list[Entry] | None:
    """An extended-XYZ file that is not a dataset of this project, or None for one that is (a frame
    with an ``id`` or ``fragment_id``) or that ASE cannot read: the dataset reader's error stands."""
    import numpy as np
    from ase.io import read

    from ..data.extxyz import from_atoms
    from ..fragments import normalize_fragment_ids

    try:
        frames = read(path, index=":")
    except Exception:  # ase raises several types for files it cannot read
        return None
    if not frames or any("id" in a.info or "fragment_id" in a.arrays for a in frames):
        return None
    name = os.path.basename(path)
    entries = []
    for k, atoms in enumerate(frames):
        if atoms.pbc.any() and not atoms.pbc.all():
            raise ValueError(f"{path}: partly periodic structures are not supported (pbc={atoms.pbc})")
        charge = int(round(float(atoms.info.get("charge", atoms.info.get("total_charge", 0.0)))))
        ids = next(
            (atoms.arrays[key] for key in ("cluster_ids", "fragment_ids") if key in atoms.arrays), None
        )
        numbers, positions = atoms.get_atomic_numbers(), atoms.get_positions()
        ids = _brics_ids(numbers, positions, charge) if ids is None else normalize_fragment_ids(ids)
        frame = atoms.copy()
        frame.info.update(id=f"{name}:{k}", molecule=name, charge=charge)
        frame.arrays["fragment_id"] = np.asarray(ids, dtype=np.int64)
        box = np.asarray(atoms.cell.array, dtype=np.float64) if atoms.pbc.all() else None
        entries.append(Entry(from_atoms(frame, path), box=box))
    return entries


def read_npz(path: str) -> list[Entry]:
    """The structures of an ``.npz`` with the authors' fixture keys (module docstring)."""
    import numpy as np

    from ..data.structure import Structure
    from ..fragments import normalize_fragment_ids

    data = np.load(path)
    for key in ("atomic_numbers", "positions"):
        if key not in data:
            raise ValueError(f"{path} has no {key!r} array (keys: {sorted(data.keys())})")
    positions = np.asarray(data["positions"], dtype=np.float64)
    batch = positions.ndim == 3
    count = positions.shape[0] if batch else 1
    name = os.path.basename(path)

    def pick(key, k, per_structure_ndim):
        if key not in data:
            return None
        value = np.asarray(data[key])
        return value[k] if value.ndim > per_structure_ndim else value

    entries = []
    for k in range(count):
        numbers = pick("atomic_numbers", k, 1)
        xyz = positions[k] if batch else positions
        charge = pick("charge", k, 0)
        charge = 0.0 if charge is None else float(charge)
        ids = pick("cluster_ids", k, 1)
        if ids is None:
            ids = _brics_ids(numbers, xyz, charge)
        _check_shapes(path, k, numbers, xyz, ids)
        centres = pick("cluster_centers", k, 2)
        if centres is None:
            ids = normalize_fragment_ids(ids)
        elif int(ids.min()) < 0 or int(ids.max()) >= len(centres):
            raise ValueError(f"{path}, structure {k}: cluster_ids must lie in 0..{len(centres) - 1}")
        structure = Structure(
            id=f"{name}:{k}", molecule=name, numbers=numbers, positions=xyz, fragment_ids=ids, charge=charge
        )
        entries.append(Entry(structure, centres=None if centres is None else np.asarray(centres, np.float64)))
    return entries


def _check_shapes(path, k, numbers, xyz, ids) -> None:
    n = len(numbers)
    if xyz.shape != (n, 3) or len(ids) != n:
        raise ValueError(
            f"{path}, structure {k}: {n} atomic numbers but positions of shape {xyz.shape} and "
            f"{len(ids)} fragment ids"
        )


def _brics_ids(numbers, positions, charge):
    from ..molecule_fragments import brics_fragment_ids_from_coordinates

    return brics_fragment_ids_from_coordinates(list(numbers), positions, int(round(charge)))

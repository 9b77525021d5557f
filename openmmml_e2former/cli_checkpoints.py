"""``e2former convert`` and ``e2former eval``: the authors' checkpoints outside OpenMM.

``e2former convert CHECKPOINT -o model.pt`` turns an authors' E2Former-LSR checkpoint
(training dict or bare state dict) into our deployable format with metadata (head, energy
unit, reference convention, source checksum).

``e2former eval MODEL INPUT`` prints (or writes) the energy and forces of every structure
in INPUT: an extended-XYZ file (read with ASE; per-atom ``cluster_ids``/``fragment_ids``/``fragment_id``
arrays and an ``info['charge']`` are used when present, otherwise BRICS fragments are made
from bonds found in the coordinates) or an ``.npz`` with the reference fixture's keys:
``atomic_numbers`` [N] or [B, N], ``positions`` [N, 3] or [B, N, 3] in Angstrom,
``cluster_ids`` [N] or [B, N], optional ``cluster_centers`` [C, 3] or [B, C, 3] (Angstrom),
optional ``charge``. ``--fixed-centers`` holds fragment centres fixed (given ones, else the
mean position of each fragment), which is what the authors' code does: forces are then
-dE/dpos at fixed centres. Without it the centres move with the atoms (exact gradients, as
in OpenMM).
"""

from __future__ import annotations

import json
import os
import sys

ENERGY_UNITS = ("eV", "kcal/mol", "kJ/mol")


def add_parser(sub) -> None:
    convert = sub.add_parser("convert", help="convert an authors' E2Former-LSR checkpoint to our format")
    convert.add_argument("checkpoint", help="authors' training checkpoint or state dict (or ours)")
    convert.add_argument("-o", "--output", required=True, help="output checkpoint (.pt)")
    convert.add_argument("--head", default=None, help="energy head to keep (required if several)")
    convert.add_argument(
        "--reference-energies",
        action="store_true",
        help="add the head's known per-element reference energies (absolute energies)",
    )
    convert.add_argument(
        "--energy-unit", choices=ENERGY_UNITS, default=None, help="override the checkpoint's energy unit"
    )
    convert.set_defaults(func=run_convert)

    evaluate = sub.add_parser("eval", help="energy and forces of every structure in an .xyz/.npz file")
    evaluate.add_argument("model", help="checkpoint (ours or the authors'), or a weights name")
    evaluate.add_argument("input", help="extended XYZ file or .npz with the fixture's keys")
    evaluate.add_argument("--head", default=None, help="energy head of an authors' checkpoint")
    evaluate.add_argument(
        "--fixed-centers", action="store_true", help="hold fragment centres fixed (the authors' semantics)"
    )
    evaluate.add_argument(
        "--units", choices=ENERGY_UNITS, default=None, help="energy unit (default: model's)"
    )
    evaluate.add_argument("--json", action="store_true", help="write JSON instead of text")
    evaluate.add_argument("-o", "--output", default=None, help="write to this file instead of stdout")
    evaluate.add_argument("--precision", choices=["single", "double"], default="double")
    evaluate.add_argument("--reference-energies", action="store_true", help="absolute energies (see convert)")
    evaluate.set_defaults(func=run_eval)


def run_convert(args) -> None:
    from .checkpoints import convert_checkpoint

    overrides = {"energy_unit": args.energy_unit} if args.energy_unit else {}
    metadata = convert_checkpoint(
        args.checkpoint, args.output, args.head, args.reference_energies, **overrides
    )
    print(f"wrote {args.output}")
    for key in ("source", "head", "available_heads", "energy_unit", "energy_unit_origin"):
        if key in metadata:
            print(f"  {key}: {metadata[key]}")
    print(f"  energy reference: {metadata.get('energy_reference_note', metadata.get('energy_reference'))}")


def run_eval(args) -> None:
    import torch

    from .checkpoints import load_checkpoint
    from .units import KJ_PER_MOL
    from .weights import resolve_weights

    model, metadata = load_checkpoint(resolve_weights(args.model), args.head, args.reference_energies)
    dtype = torch.float64 if args.precision == "double" else torch.float32
    model = model.to(dtype)
    unit = args.units or model.config.energy_unit
    scale = KJ_PER_MOL[model.config.energy_unit] / KJ_PER_MOL[unit]
    results = []
    for k, structure in enumerate(read_structures(args.input)):
        energy, forces = evaluate(model, structure, args.fixed_centers, dtype)
        results.append(_result(k, structure, energy * scale, forces * scale))
    header = {
        "model": args.model,
        "input": args.input,
        "energy_unit": unit,
        "force_unit": f"{unit}/Angstrom",
        "fixed_centers": bool(args.fixed_centers),
        "energy_reference": metadata.get("energy_reference", "unknown"),
        "structures": results,
    }
    text = json.dumps(header, indent=1) if args.json else format_text(header)
    _emit(text, args.output)


def _result(k: int, structure: dict, energy: float, forces) -> dict:
    return {
        "index": k,
        "n_atoms": int(len(structure["atomic_numbers"])),
        "energy": float(energy),
        "forces": forces.tolist(),
    }


def _emit(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text + "\n")
        return
    tmp = f"{output}.tmp-{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, output)
    print(f"wrote {output}", file=sys.stderr)


def format_text(result: dict) -> str:
    """Plain-text report: one energy line per structure, then its forces (one atom a line)."""
    lines = [
        f"# energy in {result['energy_unit']}, forces in {result['force_unit']}, "
        f"fixed centres: {result['fixed_centers']}, energy reference: {result['energy_reference']}"
    ]
    for item in result["structures"]:
        lines.append(f"structure {item['index']}: {item['n_atoms']} atoms, energy {item['energy']:.10g}")
        lines += [f"  {fx: .8e} {fy: .8e} {fz: .8e}" for fx, fy, fz in item["forces"]]
    return "\n".join(lines)


def evaluate(model, structure: dict, fixed_centres: bool, dtype):
    """(energy, forces [N, 3] numpy) of one structure in the model's units (Angstrom).

    ``structure``: atomic_numbers [N], positions [N, 3] Angstrom, fragment_ids [N], charge,
    optional centres [C, 3] Angstrom and box [3, 3] Angstrom.
    """
    import torch

    positions = torch.tensor(structure["positions"], dtype=dtype).requires_grad_(True)
    numbers = torch.tensor(structure["atomic_numbers"], dtype=torch.long)
    fragments = torch.tensor(structure["fragment_ids"], dtype=torch.long)
    charge = torch.tensor(float(structure.get("charge", 0.0)), dtype=dtype)
    box = structure.get("box")
    box = None if box is None else torch.tensor(box, dtype=dtype)
    centres = None
    if fixed_centres:
        centres = structure.get("centres")
        if centres is None:
            centres = fragment_means(structure["positions"], structure["fragment_ids"])
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
# Input files
# --------------------------------------------------------------------------- #


def read_structures(path: str) -> list[dict]:
    """Structures of an .npz (fixture keys) or extended-XYZ file (see the module docstring)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"input file not found: {path}")
    if path.lower().endswith(".npz"):
        return read_npz(path)
    return read_extxyz(path)


def read_npz(path: str) -> list[dict]:
    import numpy as np

    from .fragments import normalize_fragment_ids

    data = np.load(path)
    for key in ("atomic_numbers", "positions"):
        if key not in data:
            raise ValueError(f"{path} has no {key!r} array (keys: {sorted(data.keys())})")
    positions = np.asarray(data["positions"], dtype=np.float64)
    batch = positions.ndim == 3
    count = positions.shape[0] if batch else 1

    def pick(key, k, per_structure_ndim):
        if key not in data:
            return None
        value = np.asarray(data[key])
        return value[k] if value.ndim > per_structure_ndim else value

    structures = []
    for k in range(count):
        numbers = pick("atomic_numbers", k, 1)
        xyz = positions[k] if batch else positions
        charge = pick("charge", k, 0)
        charge = 0.0 if charge is None else float(charge)
        ids = pick("cluster_ids", k, 1)
        if ids is None:
            ids = _brics_ids(numbers, xyz, charge)
        _check_shapes(path, k, numbers, xyz, ids)
        structure = {
            "atomic_numbers": numbers.astype(np.int64),
            "positions": xyz,
            "fragment_ids": normalize_fragment_ids(ids) if "cluster_centers" not in data else ids,
            "charge": charge,
        }
        centres = pick("cluster_centers", k, 2)
        if centres is not None:
            if int(ids.min()) < 0 or int(ids.max()) >= len(centres):
                raise ValueError(f"{path}, structure {k}: cluster_ids must lie in 0..{len(centres) - 1}")
            structure["centres"] = np.asarray(centres, dtype=np.float64)
        structures.append(structure)
    return structures


def _check_shapes(path, k, numbers, xyz, ids) -> None:
    n = len(numbers)
    if xyz.shape != (n, 3) or len(ids) != n:
        raise ValueError(
            f"{path}, structure {k}: {n} atomic numbers but positions of shape {xyz.shape} and "
            f"{len(ids)} fragment ids"
        )


def _brics_ids(numbers, positions, charge):
    from .molecule_fragments import brics_fragment_ids_from_coordinates

    return brics_fragment_ids_from_coordinates(list(numbers), positions, int(round(charge)))


def read_extxyz(path: str) -> list[dict]:
    import numpy as np

    from .fragments import normalize_fragment_ids

    try:
        from ase.io import read
    except ImportError as exc:  # pragma: no cover - ase is a dependency
        raise ValueError("reading XYZ files needs ase (pip install ase)") from exc
    try:
        frames = read(path, index=":")
    except Exception as exc:
        raise ValueError(f"cannot read {path} as extended XYZ: {exc}") from exc
    structures = []
    for atoms in frames:
        numbers = atoms.get_atomic_numbers().astype(np.int64)
        positions = np.asarray(atoms.get_positions(), dtype=np.float64)
        charge = float(atoms.info.get("charge", atoms.info.get("total_charge", 0.0)))
        # the authors' key, a plural variant, and this project's datasets' key (data/extxyz.py)
        ids = next(
            (atoms.arrays[k] for k in ("cluster_ids", "fragment_ids", "fragment_id") if k in atoms.arrays),
            None,
        )
        ids = _brics_ids(numbers, positions, charge) if ids is None else normalize_fragment_ids(ids)
        structure = {"atomic_numbers": numbers, "positions": positions, "fragment_ids": ids, "charge": charge}
        if atoms.pbc.all():
            structure["box"] = np.asarray(atoms.cell.array, dtype=np.float64)
        elif atoms.pbc.any():
            raise ValueError(f"{path}: partly periodic structures are not supported (pbc={atoms.pbc})")
        structures.append(structure)
    return structures

"""Energies and forces of a checkpoint on structures and, where the structures carry reference
labels, its errors: :func:`evaluate`, the library behind ``e2former evaluate``.

Inputs:

* a dataset of this project (extended XYZ, optionally .gz, or a folder of them), read through
  :func:`openmmml_e2former.data.extxyz.read_structures`: its fragment ids, charges and, once
  labelled, energies (eV) and forces (eV/Å);
* any other extended-XYZ file (no ``id``/``fragment_id`` fields, e.g. written by ASE): per-atom
  ``cluster_ids`` (the authors' key) or ``fragment_ids`` and info ``charge`` are used when present,
  otherwise BRICS fragments from bonds found in the coordinates; a periodic frame is evaluated
  with its cell; the frames go through :func:`openmmml_e2former.data.extxyz.from_atoms`;
* an ``.npz`` with the authors' fixture keys (:func:`read_npz`); its labels are not read;
* in Python also :class:`~openmmml_e2former.data.structure.Structure` objects, or :class:`Entry`
  objects for a box or fixed fragment centres.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass

from .data.structure import Structure
from .model.config import ENERGY_UNITS
from .optional import require

PRECISIONS = {"single": "float32", "double": "float64"}


@dataclass
class Entry:
    """A structure to evaluate, with what the dataset format cannot hold."""

    structure: Structure
    box: object = None  # [3, 3] Å (periodic extended XYZ)
    centres: object = None  # [C, 3] Å (the fixture's cluster_centers)


def evaluate(
    model,
    inputs,
    *,
    head: str | None = None,
    reference_energies: bool = False,
    precision: str = "single",
    fixed_centres: bool = False,
    units: str | None = None,
    split=None,
    side: str = "test",
) -> dict:
    """Energies and forces of ``model`` on every structure of ``inputs`` and, where they carry
    labels, its errors.

    ``model``: a checkpoint (ours or the authors'), a weights name
    (:func:`~openmmml_e2former.weights.resolve_weights`), or a loaded network (not changed: a copy
    is cast to ``precision`` where needed); ``head`` and ``reference_energies`` are passed to
    :func:`~openmmml_e2former.checkpoints.load_checkpoint`. ``inputs``: one input or a list of
    them (paths, structures or entries; module docstring). ``precision``: ``"single"`` (float32,
    as trained) or ``"double"``. ``fixed_centres``: hold fragment centres fixed (given ones, else
    each fragment's mean position), as the authors' code does; otherwise they move with the atoms
    (exact gradients, as in OpenMM). ``units``: of the predicted energies and forces (default: the
    model's). ``split``: a splits JSON file (or its dict of ``train``/``val``/``test`` ids) whose
    ``side`` selects the structures.

    Returns a JSON-ready dict: ``model``, ``inputs``, ``energy_unit``, ``force_unit``,
    ``fixed_centers``, ``precision``, ``energy_reference`` and ``structures`` (per structure
    ``index``, ``id``, ``molecule``, ``n_atoms``, ``energy``, ``forces`` ``[N, 3]``); when any
    structure has labels also :func:`errors` of those (eV/atom and eV/Å whatever ``units``).
    """
    import torch

    from .units import KJ_PER_MOL

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
    if units is not None and units not in ENERGY_UNITS:
        raise ValueError(f"units must be one of {ENERGY_UNITS}, not {units!r}")
    inputs = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
    names = [_input_name(item) for item in inputs]
    entries = [entry for item in inputs for entry in _entries(item)]
    if split is not None:
        if not isinstance(split, dict):
            with open(split) as handle:
                split = json.load(handle)
        wanted = set(split[side])
        entries = [e for e in entries if e.structure.id in wanted]
        if not entries:
            raise ValueError(f"none of the {len(wanted)} selected ids is in {', '.join(names)}")
    dtype = getattr(torch, PRECISIONS[precision])
    model, metadata, name = _model(model, head, reference_energies, dtype)
    unit = units or model.config.energy_unit
    scale = KJ_PER_MOL[model.config.energy_unit] / KJ_PER_MOL[unit]
    to_ev = KJ_PER_MOL[model.config.energy_unit] / KJ_PER_MOL["eV"]
    predictions = [energy_and_forces(model, entry, fixed_centres, dtype) for entry in entries]
    result = {
        "model": name,
        "inputs": names,
        "energy_unit": unit,
        "force_unit": f"{unit}/Angstrom",
        "fixed_centers": bool(fixed_centres),
        "precision": precision,
        "energy_reference": metadata.get("energy_reference", "unknown"),
        "structures": [
            _prediction(k, e.structure, energy * scale, forces * scale)
            for k, (e, (energy, forces)) in enumerate(zip(entries, predictions, strict=True))
        ],
    }
    labelled = [(e.structure, p) for e, p in zip(entries, predictions, strict=True) if e.structure.labelled]
    if labelled:
        result.update(errors(labelled, to_ev))
    return result


def _model(model, head, reference_energies, dtype):
    """(network in ``dtype``, checkpoint metadata, name for the result) of :func:`evaluate`'s
    ``model``."""
    import torch

    if isinstance(model, torch.nn.Module):
        if head is not None or reference_energies:
            raise ValueError("head and reference_energies apply to a checkpoint, not to a loaded network")
        floating = [t for t in model.state_dict().values() if t.is_floating_point()]
        if any(t.dtype != dtype for t in floating):
            model = copy.deepcopy(model).to(dtype)
        return model, {}, type(model).__name__
    from .checkpoints import load_checkpoint
    from .weights import resolve_weights

    loaded, metadata = load_checkpoint(resolve_weights(model), head, reference_energies)
    return loaded.to(dtype), metadata, os.fspath(model)


def _input_name(item) -> str:
    if isinstance(item, Entry):
        item = item.structure
    return item.id if isinstance(item, Structure) else os.fspath(item)


def _entries(item) -> list[Entry]:
    if isinstance(item, Entry):
        return [item]
    if isinstance(item, Structure):
        return [Entry(item)]
    return read_inputs(os.fspath(item))


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
    from .data.splits import group_key
    from .train.metrics import ErrorAccumulator

    acc = ErrorAccumulator()
    for s, (energy, forces) in labelled:
        acc.add(energy * to_ev - s.energy, s.num_atoms, forces * to_ev - s.forces, group_key(s))
    return {"overall": acc.summary(), "by_size": acc.by_size(), "by_molecule": acc.by_group()}


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
    """The structures of one input file or folder (see the module docstring)."""
    from .data.extxyz import read_structures

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
    read = require("ase.io", "train", "reading extended-XYZ files").read
    import numpy as np

    from .data.extxyz import from_atoms
    from .fragments import normalize_fragment_ids

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
    """The structures of an ``.npz`` with the authors' fixture keys: ``atomic_numbers`` [N] or
    [B, N], ``positions`` [N, 3] or [B, N, 3] (Å), ``cluster_ids`` [N] or [B, N] (else BRICS),
    optional ``cluster_centers`` [C, 3] or [B, C, 3] (Å) and ``charge``."""
    import numpy as np

    from .fragments import normalize_fragment_ids

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
    from .molecule_fragments import brics_fragment_ids_from_coordinates

    return brics_fragment_ids_from_coordinates(list(numbers), positions, int(round(charge)))

"""Dataset files: extended XYZ (optionally gzip-compressed) read and written with ASE.

Schema (see ``docs/dataset.md``): per frame, ``info`` holds ``id``, ``molecule``, ``charge``,
``multiplicity``, ``source`` and, once labelled, ``REF_energy`` (eV), ``method``, ``program``,
``program_version``, ``basis``; ``arrays`` hold ``fragment_id`` and, once labelled,
``REF_forces`` (eV/Å). Positions are in Å.

Writing is atomic: a file is written to a temporary name and moved over the target with
``os.replace``, so a reader (or a crash) never sees a half-written file.
"""

from __future__ import annotations

import glob
import gzip
import io as _io
import os

import numpy as np

from ..optional import require
from .structure import Structure

_LABEL_KEYS = ("method", "program", "program_version", "basis", "gpu4pyscf", "scf_damping", "label_seconds")


def _ase(module: str = "ase.io"):
    """An ASE module: dataset files are read and written with ASE."""
    return require(module, "train", "reading and writing dataset files (extxyz)")


def to_atoms(structure: Structure):
    """An ``ase.Atoms`` carrying every field of ``structure`` in ``info``/``arrays``."""
    atoms = _ase("ase").Atoms(numbers=structure.numbers, positions=structure.positions)
    atoms.info.update(
        id=structure.id,
        molecule=structure.molecule,
        charge=int(structure.charge),
        multiplicity=int(structure.multiplicity),
        source=structure.source or "unspecified",  # ase writes an empty string unquoted and misreads it
    )
    atoms.arrays["fragment_id"] = structure.fragment_ids.astype(np.int64)
    if structure.energy is not None:
        atoms.info["REF_energy"] = float(structure.energy)
    if structure.forces is not None:
        atoms.arrays["REF_forces"] = np.asarray(structure.forces, dtype=np.float64)
    for key, value in structure.labels.items():
        atoms.info[key] = value if value != "" else "unspecified"
    return atoms


def from_atoms(atoms, where: str = "") -> Structure:
    """The :class:`Structure` stored in an ``ase.Atoms`` written by :func:`to_atoms`."""
    info = atoms.info
    for key in ("id", "molecule", "charge"):
        if key not in info:
            raise ValueError(f"{where}: frame has no {key!r} field (not an openmmml-e2former dataset?)")
    if "fragment_id" not in atoms.arrays:
        raise ValueError(f"{where}: frame {info['id']} has no fragment_id array")
    labels = {k: info[k] for k in _LABEL_KEYS if k in info}
    return Structure(
        id=str(info["id"]),
        molecule=str(info["molecule"]),
        numbers=atoms.numbers,
        positions=atoms.positions,
        fragment_ids=atoms.arrays["fragment_id"],
        charge=int(info["charge"]),
        multiplicity=int(info.get("multiplicity", 1)),
        source=str(info.get("source", "")),
        energy=float(info["REF_energy"]) if "REF_energy" in info else None,
        forces=atoms.arrays.get("REF_forces"),
        labels=labels,
    )


def write_structures(path: str, structures: list[Structure]) -> None:
    """Write ``structures`` to ``path`` (``.extxyz`` or ``.extxyz.gz``) atomically."""
    ase_io = _ase()
    buffer = _io.StringIO()
    ase_io.write(buffer, [to_atoms(s) for s in structures], format="extxyz")
    data = buffer.getvalue().encode()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as handle:
        handle.write(gzip.compress(data, mtime=0) if path.endswith(".gz") else data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_structures(path: str) -> list[Structure]:
    """Read a dataset file, or every ``*.extxyz[.gz]`` file of a folder (sorted by name)."""
    ase_io = _ase()
    files = dataset_files(path)
    out: list[Structure] = []
    for name in files:
        opener = gzip.open if name.endswith(".gz") else open
        try:
            # read into memory first: ase seeks back and forth, which is quadratic on a gzip stream
            with opener(name, "rt") as handle:
                frames = ase_io.read(_io.StringIO(handle.read()), index=":", format="extxyz")
        except Exception as exc:  # ase raises several types for malformed files
            raise ValueError(f"cannot read dataset file {name}: {exc}") from exc
        out.extend(from_atoms(atoms, name) for atoms in frames)
    return out


def dataset_files(path: str) -> list[str]:
    """The dataset files at ``path`` (a file, or a folder of ``*.extxyz``/``*.extxyz.gz``)."""
    if os.path.isdir(path):
        files = sorted(
            glob.glob(os.path.join(path, "*.extxyz")) + glob.glob(os.path.join(path, "*.extxyz.gz"))
        )
        if not files:
            raise FileNotFoundError(f"no *.extxyz or *.extxyz.gz files in {path}")
        return files
    if not os.path.exists(path):
        raise FileNotFoundError(f"dataset not found: {path}")
    return [path]

"""Shared helpers of the benchmark scripts: the villin test system, atom selections,
model construction, timing and memory probes, JSON and table output.

Units: positions in Angstrom unless a name says ``_nm``; energies in eV (model) or
kJ/mol (OpenMM).  Import ``torch`` before ``openmmtorch`` (the scripts do).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch  # noqa: F401  (before openmmtorch, which the OpenMM scripts import)

from openmmml_e2former.bench.systems import minimum_image as _minimum_image

# the selections shared with the speed harness live in the package (one copy)
from openmmml_e2former.bench.systems import protein_atoms, protein_plus_nearest  # noqa: F401

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

KT_300K_EV = 8.617333262e-5 * 300.0
LOAD_AT_START = list(os.getloadavg())  # when the script imported this module


# --------------------------------------------------------------------------- #
# The villin system (OpenMM's app/data/test.pdb)
# --------------------------------------------------------------------------- #


def villin_pdb():
    """``openmm.app.PDBFile`` of villin headpiece in water (8867 atoms, box 4.92 x 4.60 x 3.89 nm)."""
    import openmm.app as app

    return app.PDBFile(os.path.join(os.path.dirname(app.__file__), "data", "test.pdb"))


def box_angstrom(topology) -> np.ndarray:
    import openmm.unit as unit

    vectors = topology.getPeriodicBoxVectors()
    return np.array([[v[k].value_in_unit(unit.angstrom) for k in range(3)] for v in vectors])


def positions_angstrom(pdb) -> np.ndarray:
    import openmm.unit as unit

    return np.array(pdb.positions.value_in_unit(unit.angstrom), dtype=np.float64)


def atomic_numbers(topology, atoms) -> np.ndarray:
    everything = list(topology.atoms())
    return np.array([everything[i].element.atomic_number for i in atoms], dtype=np.int64)


def sphere_selection(
    topology, positions: np.ndarray, box: np.ndarray, radius: float, centre: np.ndarray | None = None
) -> tuple[list[int], np.ndarray]:
    """Whole residues with any atom within ``radius`` Angstrom of ``centre`` (default: the
    protein centre), unwrapped to the image nearest the centre.  Returns (indices, the
    shift [n_total, 3] added to every atom to unwrap it)."""
    protein = protein_atoms(topology)
    if centre is None:
        centre = positions[protein].mean(axis=0)
    shift = np.zeros_like(positions)
    chosen = []
    for residue in topology.residues():
        idx = [a.index for a in residue.atoms()]
        s = _minimum_image(positions[idx[0]] - centre, box) - (positions[idx[0]] - centre)
        p = positions[idx] + s
        if (np.sqrt(((p - centre) ** 2).sum(-1)) < radius).any():
            chosen.extend(idx)
            shift[idx] = s
    return sorted(chosen), shift


# --------------------------------------------------------------------------- #
# Models
# --------------------------------------------------------------------------- #


def build_model(variant: str, dtype=torch.float32, seed: int = 0):
    """The small (shipped-size) random network: 'lsr' (fragment_selection='all'),
    'local' (num_long_layers=0) or 'topk' (fragment_selection='topk')."""
    from openmmml_e2former.model import E2FormerLSR
    from openmmml_e2former.model.config import small_config

    changes = {
        "lsr": {},
        "local": {"num_long_layers": 0},
        "topk": {"fragment_selection": "topk"},
        "reference": {"local_mode": "reference"},
    }[variant]
    torch.manual_seed(seed)
    return E2FormerLSR(small_config(**changes)).eval().to(dtype)


def model_inputs(topology, positions: np.ndarray, atoms, box=None, dtype=torch.float32):
    """(positions [N,3], atomic numbers [N], fragment ids [N], charge [], box [3,3] or None)."""
    from openmmml_e2former.fragments import fragment_ids_from_topology

    pos = torch.tensor(positions[atoms], dtype=dtype)
    z = torch.tensor(atomic_numbers(topology, atoms))
    fid = torch.tensor(fragment_ids_from_topology(topology, atoms), dtype=torch.long)
    b = None if box is None else torch.tensor(box, dtype=dtype)
    return pos, z, fid, torch.tensor(0.0, dtype=dtype), b


def energy_and_forces(model, pos, z, fid, charge, box):
    """One energy + forces evaluation (eV, eV/Angstrom)."""
    p = pos.detach().clone().requires_grad_(True)
    energy = model(p, z, fid, charge, box, None)
    (grad,) = torch.autograd.grad(energy, p)
    return float(energy.detach()), -grad


# --------------------------------------------------------------------------- #
# Memory
# --------------------------------------------------------------------------- #


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``resource.getrusage``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def virtual_size_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def limit_memory(extra_gib: float) -> None:
    """Cap this process's address space at its current size + ``extra_gib`` so that an
    oversized allocation raises instead of waking the OOM killer on a shared machine."""
    limit = virtual_size_bytes() + int(extra_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


# --------------------------------------------------------------------------- #
# Output
# --------------------------------------------------------------------------- #


def environment() -> dict:
    import openmm

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "openmm": openmm.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": LOAD_AT_START,
        "machine": platform.processor() or platform.machine(),
        "git_commit": commit,
        "argv": sys.argv,
    }


def write_json(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    data = dict(data)
    data.setdefault("environment", environment())
    data["environment"]["load_average_at_end"] = list(os.getloadavg())
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def print_table(rows: list[list], headers: list[str]) -> None:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=False))
    print(line)
    print("-" * len(line))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=False)))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 1000:
            return f"{value:.0f}"
        if abs(value) < 0.01 and value != 0:
            return f"{value:.3g}"
        return f"{value:.3f}"
    return str(value)


def median(values):
    return statistics.median(values) if values else None


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True

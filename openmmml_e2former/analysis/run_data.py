"""Read a run folder written by ``e2former run``: stitched trajectory, state CSVs, references."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np


@dataclass
class RunData:
    """A run's MD frames and state rows, stage by stage.

    ``traj`` holds every MD stage's frames in order; ``frame_stage`` (n_frames,) names the
    stage of each frame and ``frame_time_ps`` its simulation time.  ``state`` maps each
    CSV column (see :func:`read_state_csv`) to an array over all stages, with
    ``state_stage`` naming the stage of each row.
    """

    folder: str
    traj: object
    frame_stage: np.ndarray
    frame_time_ps: np.ndarray
    state: dict
    state_stage: np.ndarray
    stages: list
    minimized: object | None
    ml_atoms: list
    ml_info: dict


COLUMNS = {
    "Step": "step",
    "Time (ps)": "time_ps",
    "Potential Energy (kJ/mole)": "potential_kj_mol",
    "Kinetic Energy (kJ/mole)": "kinetic_kj_mol",
    "Total Energy (kJ/mole)": "total_kj_mol",
    "Temperature (K)": "temperature_K",
    "Box Volume (nm^3)": "volume_nm3",
    "Density (g/mL)": "density_g_ml",
    "Speed (ns/day)": "speed_ns_day",
}


def read_state_csv(path: str) -> dict[str, np.ndarray]:
    """Columns of an OpenMM StateDataReporter CSV under short names (``COLUMNS``), as float arrays.

    Only complete rows are read: a last line cut short (no newline, too few fields or a
    number cut in half, as a killed or still running run leaves it) is dropped.
    """
    with open(path) as handle:
        header = handle.readline().lstrip("#").strip()
        names = [h.strip('"') for h in header.split(",")]
        rows = [row for row in (_csv_row(line, len(names)) for line in handle) if row is not None]
    data = np.array(rows, dtype=float).reshape(len(rows), len(names))
    return {COLUMNS.get(n, n): data[:, i] for i, n in enumerate(names)}


def _csv_row(line: str, n_columns: int) -> list[float] | None:
    """The numbers of one complete CSV line, or None for an incomplete or empty one."""
    if not line.endswith("\n") or not line.strip():
        return None
    fields = line.strip().split(",")
    if len(fields) != n_columns:
        return None
    try:
        return [float(f) for f in fields]
    except ValueError:
        return None


def run_stages(folder: str) -> list[dict]:
    """The stages of a run (from ``run.json``) with their folder and whether they finished."""
    with open(os.path.join(folder, "run.json")) as handle:
        manifest = json.load(handle)
    stages = []
    for i, stage in enumerate(manifest["protocol"]["stages"]):
        directory = os.path.join(folder, "stages", f"{i + 1:02d}-{stage['name']}")
        stages.append(
            {**stage, "dir": directory, "done": os.path.isfile(os.path.join(directory, "done.json"))}
        )
    return stages


def load_run(folder: str) -> RunData:
    """Load a run folder (finished or not: stages without outputs are skipped)."""
    import mdtraj

    if not os.path.isfile(os.path.join(folder, "run.json")):
        raise FileNotFoundError(f"{folder} is not a run folder (no run.json); run `e2former run` first")
    topology_pdb = os.path.join(folder, "prepared.pdb")
    top = mdtraj.load_topology(topology_pdb)
    stages = run_stages(folder)
    pieces, labels, times, states, state_labels = [], [], [], [], []
    clock = 0.0
    for stage in stages:
        if stage["type"] != "md":
            continue
        dt_ps = float(stage["timestep_fs"]) / 1000.0
        path = os.path.join(stage["dir"], f"trajectory.{stage['trajectory_format']}")
        if os.path.isfile(path) and os.path.getsize(path) > 0:
            piece = mdtraj.load(path, top=top)
            if piece.n_frames:
                pieces.append(piece)
                labels += [stage["name"]] * piece.n_frames
                times.append(clock + dt_ps * stage["trajectory_interval"] * np.arange(1, piece.n_frames + 1))
        csv = os.path.join(stage["dir"], "state.csv")
        if os.path.isfile(csv):
            table = read_state_csv(csv)
            states.append(table)
            state_labels += [stage["name"]] * len(table["step"])
        clock += dt_ps * stage["steps"]
    if not pieces:
        raise ValueError(f"{folder} has no trajectory frames yet (no MD stage has reported)")
    traj = mdtraj.join(pieces, check_topology=False)
    state = {k: np.concatenate([s[k] for s in states]) for k in states[0]} if states else {}
    ml_atoms, ml_info = _ml_region(folder)
    return RunData(
        folder,
        traj,
        np.array(labels),
        np.concatenate(times),
        state,
        np.array(state_labels),
        stages,
        _minimized(stages, top),
        ml_atoms,
        ml_info,
    )


def _minimized(stages: list[dict], top):
    """The structure at the end of the last minimisation stage (one-frame trajectory), if any."""
    import mdtraj

    done = [s for s in stages if s["type"] == "minimize" and s["done"]]
    if not done:
        return None
    return mdtraj.load(os.path.join(done[-1]["dir"], "final.pdb"), top=top)


def _ml_region(folder: str) -> tuple[list, dict]:
    path = os.path.join(folder, "ml_region.json")
    if not os.path.isfile(path):
        return [], {}
    with open(path) as handle:
        info = json.load(handle)
    return [int(i) for i in info.get("atoms", [])], info

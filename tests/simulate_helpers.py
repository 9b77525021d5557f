"""Shared inputs of the simulate tests: small structures cut from OpenMM's villin (test.pdb)
and protocol dicts derived from the quick-check preset."""

from __future__ import annotations

import copy
import os

import yaml

from openmmml_e2former.simulate.protocol import protocols_dir


def villin_path() -> str:
    import openmm.app as app

    return os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")


def write_villin_piece(path: str, selection: str = "protein") -> str:
    """Write the atoms of villin matching an mdtraj selection (solvent stripped) as a PDB."""
    import mdtraj

    traj = mdtraj.load(villin_path())
    traj.atom_slice(traj.topology.select(selection)).save_pdb(path)
    return path


def quick_check_dict() -> dict:
    with open(os.path.join(protocols_dir(), "quick-check.yaml")) as handle:
        return yaml.safe_load(handle)


def md_stage(name: str, steps: int, **extra) -> dict:
    stage = {
        "name": name,
        "ensemble": "nvt",
        "steps": steps,
        "timestep_fs": 1.0,
        "temperature_K": 300,
        "friction_per_ps": 10.0,
        "report_interval": 5,
        "trajectory_interval": 5,
        "checkpoint_interval": 50,
    }
    stage.update(extra)
    return stage


def small_protocol(stages: list[dict], padding_nm: float = 1.0, **prepare) -> dict:
    """quick-check's sections with other stages and solvent padding."""
    data = copy.deepcopy(quick_check_dict())
    data["prepare"]["padding_nm"] = padding_nm
    data["prepare"].update(prepare)
    data["stages"] = stages
    return data

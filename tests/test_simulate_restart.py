"""Restart: a run killed (SIGKILL) in the middle of an MD stage and started again with the
same command resumes from the stage's last checkpoint; the stitched outputs hold every
frame and CSV step exactly once and the frames written before the checkpoint are kept."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from simulate_helpers import md_stage, small_protocol

from openmmml_e2former.analysis.run_data import read_state_csv
from openmmml_e2former.simulate.restart import dcd_frame_count

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, EVERY, CHECKPOINT = 160, 5, 40


def _command(protocol, pdb, folder):
    return [
        sys.executable,
        "-m",
        "openmmml_e2former.cli",
        "run",
        protocol,
        "--pdb",
        pdb,
        "--ml",
        "resid 0 to 1",
        "-o",
        folder,
        "--platform",
        "CPU",
        "--no-progress",
    ]


def _dcd_xyz(path, pdb):
    import mdtraj

    return mdtraj.load_dcd(path, top=mdtraj.load_topology(pdb)).xyz


def test_killed_run_resumes_without_duplicate_or_missing_frames(tmp_path, villin_piece):
    pdb = villin_piece(str(tmp_path / "peptide.pdb"), "resid 0 to 2")
    stages = [
        {"name": "min", "type": "minimize", "forces": "mm", "max_iterations": 50},
        md_stage(
            "md", STEPS, report_interval=EVERY, trajectory_interval=EVERY, checkpoint_interval=CHECKPOINT
        ),
    ]
    protocol = tmp_path / "restart.yaml"
    protocol.write_text(yaml.safe_dump(small_protocol(stages, padding_nm=1.9)))
    folder = str(tmp_path / "run")
    dcd = os.path.join(folder, "stages", "02-md", "trajectory.dcd")

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        _command(str(protocol), pdb, folder),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300
    # kill after the first checkpoint (step 40 = 8 frames) but well before the end (32 frames)
    while not (os.path.exists(dcd) and dcd_frame_count(dcd) >= CHECKPOINT // EVERY + 2):
        if process.poll() is not None or time.time() > deadline:
            pytest.fail(f"the run ended before it could be interrupted:\n{process.stdout.read()}")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    frames_at_kill = dcd_frame_count(dcd)
    assert frames_at_kill < STEPS // EVERY, "the stage had finished: nothing to test"
    before = _dcd_xyz(dcd, os.path.join(folder, "prepared.pdb"))[: CHECKPOINT // EVERY]

    again = subprocess.run(
        _command(str(protocol), pdb, folder), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "stage 'min': already finished, skipped" in again.stdout
    resumed = int(re.search(r"resuming at step (\d+)", again.stdout).group(1))
    assert resumed > 0 and resumed % CHECKPOINT == 0 and resumed <= frames_at_kill * EVERY

    xyz = _dcd_xyz(dcd, os.path.join(folder, "prepared.pdb"))
    assert xyz.shape[0] == STEPS // EVERY  # no duplicate, no missing frame
    np.testing.assert_array_equal(xyz[: len(before)], before)  # frames before the checkpoint kept as written
    table = read_state_csv(os.path.join(folder, "stages", "02-md", "state.csv"))
    np.testing.assert_array_equal(table["step"], np.arange(EVERY, STEPS + 1, EVERY))
    assert np.all(np.diff(table["time_ps"]) > 0)
    assert os.path.isfile(os.path.join(folder, "stages", "02-md", "done.json"))
    import openmm

    with open(os.path.join(folder, "sessions.json")) as handle:
        sessions = json.load(handle)  # the start and the resume
    assert [s["platform"] for s in sessions] == ["CPU", "CPU"]
    assert {s["openmm"] for s in sessions} == {openmm.__version__}
    assert sessions[0]["started"] <= sessions[1]["started"]

"""Campaigns on Dask (campaign.py, analysis/campaign.py): runs on a local cluster, restart at
campaign level, a failing run beside finished ones, a worker killed mid-stage, batch-system
configuration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from openmmml_e2former.campaign import load_campaign, run_campaign
from openmmml_e2former.simulate.restart import dcd_frame_count

STAGES = [
    {"name": "min", "type": "minimize", "forces": "mm", "max_iterations": 50},
    {
        "name": "md",
        "ensemble": "nvt",
        "steps": 40,
        "timestep_fs": 1.0,
        "temperature_K": 300,
        "friction_per_ps": 10.0,
        "report_interval": 5,
        "trajectory_interval": 5,
        "checkpoint_interval": 20,
    },
]


def _campaign(folder, runs, steps=40, checkpoint=20, workers=2) -> str:
    stages = [dict(STAGES[0]), {**STAGES[1], "steps": steps, "checkpoint_interval": checkpoint}]
    data = {
        "name": "test",
        "output": "out",
        "cluster": {"workers": workers},
        "defaults": {
            "protocol": "quick-check",
            "ml": "resid 0 to 1",
            "platform": "CPU",
            "overrides": {"prepare": {"padding_nm": 1.9}, "stages": stages},
        },
        "runs": runs,
    }
    path = os.path.join(folder, "campaign.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(data, handle)
    return path


@pytest.fixture(scope="module")
def peptides(tmp_path_factory, villin_piece):
    folder = tmp_path_factory.mktemp("campaign")
    villin_piece(str(folder / "pepA.pdb"), "resid 0 to 2")
    villin_piece(str(folder / "pepB.pdb"), "resid 5 to 7")
    return folder


def test_campaign_runs_replicas_reports_a_failure_and_a_rerun_does_nothing(peptides):
    """2 replicas of one peptide, 1 other peptide and 1 bad run on 2 local workers: the three
    finish with complete folders, the bad one is named in the report, and a rerun redoes nothing."""
    runs = [
        {"name": "pepA", "pdb": "pepA.pdb", "replicas": 2},
        {"name": "pepB", "pdb": "pepB.pdb"},
        {"name": "bad", "pdb": "pepA.pdb", "ml": "resname XYZ"},
    ]
    campaign = load_campaign(_campaign(str(peptides), runs))
    assert [r.name for r in campaign.runs] == ["pepA-r1", "pepA-r2", "pepB", "bad"]
    assert [r.seed for r in campaign.runs] == [1, 2, 1, 1]
    results = run_campaign(campaign, progress=False)
    assert {k: v["status"] for k, v in results.items()} == {
        "pepA-r1": "done",
        "pepA-r2": "done",
        "pepB": "done",
        "bad": "failed",
    }
    assert "resname XYZ" in results["bad"]["error"]
    out = campaign.output
    for name in ("pepA-r1", "pepA-r2", "pepB"):
        for part in ("final.pdb", "timings.json", "analysis/report.html", "analysis/summary.json"):
            assert os.path.isfile(os.path.join(out, name, part)), (name, part)
    # replicas differ (seed + k); the same seed in another folder would not
    xyz = [_frames(os.path.join(out, n)) for n in ("pepA-r1", "pepA-r2")]
    assert xyz[0].shape == xyz[1].shape and not np.allclose(xyz[0][-1], xyz[1][-1])

    summary = json.load(open(os.path.join(out, "campaign-summary.json")))
    rows = {r["name"]: r for r in summary["runs"]}
    assert rows["bad"]["status"] == "failed" and "resname XYZ" in rows["bad"]["error"]
    for name in ("pepA-r1", "pepA-r2", "pepB"):
        own = json.load(open(os.path.join(out, name, "analysis", "summary.json")))
        assert rows[name]["rmsd"] == pytest.approx(own["rmsd_minimized"]["last"])
        assert rows[name]["ns_per_day"] > 0
    group = next(g for g in summary["groups"] if g["group"] == "pepA")
    values = [rows["pepA-r1"]["rmsd"], rows["pepA-r2"]["rmsd"]]
    assert group["rmsd"]["mean"] == pytest.approx(np.mean(values))
    assert group["rmsd"]["std"] == pytest.approx(np.std(values, ddof=1))
    page = open(os.path.join(out, "campaign-report.html")).read()
    assert "resname XYZ" in page and "pepB" in page and "data:image/png;base64" in page
    with open(os.path.join(out, "campaign-runs.csv")) as handle:
        assert len(handle.read().strip().splitlines()) == 1 + 4

    stamps = {n: os.path.getmtime(os.path.join(out, n, "final.pdb")) for n in ("pepA-r1", "pepA-r2", "pepB")}
    again = run_campaign(load_campaign(campaign.source), progress=False)
    assert {k: v["status"] for k, v in again.items() if k != "bad"} == dict.fromkeys(stamps, "skipped")
    assert again["bad"]["status"] == "failed"  # a failed run is tried again, and fails again
    assert stamps == {n: os.path.getmtime(os.path.join(out, n, "final.pdb")) for n in stamps}


def _frames(folder):
    import mdtraj

    dcd = os.path.join(folder, "stages", "02-md", "trajectory.dcd")
    return mdtraj.load_dcd(dcd, top=os.path.join(folder, "prepared.pdb")).xyz


def _worker_pids(parent: int) -> list[int]:
    """Dask worker processes below ``parent`` (a local cluster's nannies spawn them with
    multiprocessing)."""
    import psutil

    found = []
    for child in psutil.Process(parent).children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def _start_campaign(path: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENMM_CPU_THREADS": "1"}  # same arithmetic in both runs
    command = [sys.executable, "-m", "openmmml_e2former.cli", "campaign", path]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_run_whose_worker_is_killed_resumes_to_the_frames_of_an_uninterrupted_run(peptides, tmp_path):
    """The worker running a campaign's only run is killed (SIGKILL) in the middle of its MD stage;
    Dask starts the run again on a new worker, which resumes from the last checkpoint. Its frames
    equal (to float32 rounding) those of the same run done without interruption from the same
    prepared structure (preparation places ions at random, so that run is given the killed one's)."""
    import shutil

    steps, checkpoint = 200, 40
    runs = [{"name": "long", "pdb": str(peptides / "pepA.pdb")}]
    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    path = _campaign(str(killed_dir), runs, steps=steps, checkpoint=checkpoint, workers=1)
    dcd = killed_dir / "out" / "long" / "stages" / "02-md" / "trajectory.dcd"
    process = _start_campaign(path)
    deadline = time.time() + 400
    while not (dcd.exists() and dcd_frame_count(str(dcd)) >= checkpoint // 5 + 2):
        if process.poll() is not None or time.time() > deadline:
            pytest.fail(f"the run ended before its worker could be killed:\n{process.stdout.read()}")
        time.sleep(0.05)
    workers = _worker_pids(process.pid)
    assert workers, "no Dask worker process found"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    killed_at = dcd_frame_count(str(dcd))
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    assert killed_at < steps // 5, "the stage had finished before the kill: nothing to test"
    log = open(killed_dir / "out" / "logs" / "long.log").read()
    assert "resuming at step" in log, log

    whole_dir = tmp_path / "whole"
    (whole_dir / "out" / "long").mkdir(parents=True)
    for name in ("run.json", "prepare.json", "prepare.txt", "prepared.pdb"):
        shutil.copy(killed_dir / "out" / "long" / name, whole_dir / "out" / "long" / name)
    process = _start_campaign(_campaign(str(whole_dir), runs, steps=steps, checkpoint=checkpoint, workers=1))
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    assert "resuming at step" not in open(whole_dir / "out" / "logs" / "long.log").read()
    resumed = _frames(str(killed_dir / "out" / "long"))
    whole = _frames(str(whole_dir / "out" / "long"))
    assert resumed.shape == whole.shape == (steps // 5, *whole.shape[1:])
    np.testing.assert_allclose(resumed, whole, rtol=0, atol=1e-5)  # nm: float32 rounding after the resume


def test_bad_campaign_files_are_refused_before_any_run(tmp_path):
    from openmmml_e2former.campaign import campaign_from_dict

    good = {"protocol": "quick-check", "pdb": "x.pdb"}
    with pytest.raises(ValueError, match="no file matches"):
        campaign_from_dict({"runs": [{**good, "pdb": "nothing-*.pdb"}]}, str(tmp_path))
    (tmp_path / "x.pdb").write_text("")
    with pytest.raises(ValueError, match="unknown key"):
        campaign_from_dict({"runs": [{**good, "replica": 2}]}, str(tmp_path))
    with pytest.raises(ValueError, match="names must be unique"):
        campaign_from_dict({"runs": [good, good]}, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="protocol 'nope' not found"):
        campaign_from_dict({"runs": [{**good, "protocol": "nope"}]}, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="structure file not found"):
        campaign_from_dict({"runs": [{**good, "pdb": "missing.pdb"}]}, str(tmp_path))
    with pytest.raises(ValueError, match=r"\[prepare\]: unknown key"):
        campaign_from_dict({"runs": [{**good, "overrides": {"prepare": {"padding": 1.0}}}]}, str(tmp_path))
    with pytest.raises(ValueError, match=r"\[ligand\]: unknown key\(s\) \['smile'\]"):
        campaign_from_dict({"runs": [{**good, "ligand": {"resname": "LIG", "smile": "C"}}]}, str(tmp_path))
    with pytest.raises(ValueError, match="type must be local, slurm or pbs"):
        campaign_from_dict({"runs": [good], "cluster": {"type": "k8s"}}, str(tmp_path))


def test_slurm_configuration_gives_one_gpu_per_worker(tmp_path):
    """Configuration only (no batch system here): the job script dask-jobqueue would submit."""
    from openmmml_e2former.campaign import make_cluster

    cluster = {
        "type": "slurm",
        "jobs": 0,
        "jobqueue": {
            "cores": 8,
            "processes": 1,
            "memory": "32GB",
            "walltime": "12:00:00",
            "queue": "gpu",
            "job_extra_directives": ["--gres=gpu:1"],
            "worker_resources": {"GPU": 1},
        },
    }
    batch = make_cluster(cluster)
    try:
        script = batch.job_script()
    finally:
        batch.close()
    assert "#SBATCH -p gpu" in script and "#SBATCH --gres=gpu:1" in script
    assert "#SBATCH -t 12:00:00" in script and "--resources GPU=1" in script
    # workers that declare a GPU get one run at a time each, however many threads they have
    from openmmml_e2former.campaign import CLUSTER_DEFAULTS, gpu_resource

    assert gpu_resource({**CLUSTER_DEFAULTS, **cluster}, 0) == 1.0
    assert gpu_resource({**CLUSTER_DEFAULTS, "address": "tcp://x:8786", "gpu": True}, 0) == 1.0
    assert gpu_resource(dict(CLUSTER_DEFAULTS), 0) == 0.0  # CPU workers: no resource asked
    assert gpu_resource({**CLUSTER_DEFAULTS, "runs_per_gpu": 2}, 4) == 0.5

"""Campaigns: many protocol runs as Dask tasks (``e2former campaign CAMPAIGN.yaml``).

A campaign file lists runs; each becomes an ordinary run folder of ``e2former run`` under the
campaign's ``output`` folder (same outputs, same restart rules) and is analysed when it ends.
Runs are Dask tasks on a local cluster (one worker per GPU, else ``workers`` CPU workers), on a
running scheduler (``cluster: {address: tcp://...}``) or on a batch system through dask-jobqueue
(``cluster: {type: slurm|pbs, ...}``). Rerunning the command skips finished runs, resumes the
others from their checkpoints, and a run whose worker died is retried by Dask; one failing run is
reported and does not stop the others. ``docs/campaigns.md`` has the file format.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field

from .optional import require

CAMPAIGN_KEYS = {"name", "output", "cluster", "defaults", "runs"}
RUN_KEYS = {"name", "protocol", "pdb", "ml", "replicas", "seed", "platform", "overrides", "ligand"}
CLUSTER_DEFAULTS = {
    "type": "local",  # local | slurm | pbs (an address replaces all three)
    "address": None,  # tcp://host:8786 of a running scheduler
    "workers": 2,  # local CPU workers (ignored when GPUs are found: one worker per GPU)
    "threads_per_worker": 1,
    "runs_per_gpu": 1,  # >1 shares a GPU between runs, only when asked
    "retries": 2,  # extra attempts for a run whose worker died
    "jobs": 1,  # dask-jobqueue: batch jobs to start
    "jobqueue": {},  # dask-jobqueue keyword arguments (cores, memory, walltime, queue, ...)
    "gpu": False,  # workers at `address` declare `--resources GPU=1`: one run per GPU
}
DONE = "campaign-done.json"


@dataclass
class RunSpec:
    """One run of a campaign: everything a worker needs to start or resume it."""

    name: str
    folder: str
    protocol: str
    pdb: str
    ml: str | None = None
    seed: int | None = None
    platform: str | None = None
    overrides: dict = field(default_factory=dict)
    ligand: dict = field(default_factory=dict)
    group: str = ""  # the input this run belongs to (replicas of one input share it)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Campaign:
    name: str
    output: str
    cluster: dict
    runs: list[RunSpec]
    source: str = ""


def load_campaign(path: str) -> Campaign:
    """Read and check a campaign file; every input file and protocol is checked here, before
    any run starts. Relative paths are relative to the campaign file."""
    import yaml

    if not os.path.isfile(path):
        raise FileNotFoundError(f"campaign file not found: {path}")
    with open(path) as handle:
        data = yaml.safe_load(handle)
    return campaign_from_dict(data, os.path.dirname(os.path.abspath(path)), where=path)


def campaign_from_dict(data, base: str = ".", where: str = "campaign") -> Campaign:
    from .simulate.protocol import resolve_protocol_path

    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not data["runs"]:
        raise ValueError(f"{where}: a campaign is a mapping with a non-empty 'runs' list")
    unknown = sorted(set(data) - CAMPAIGN_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(CAMPAIGN_KEYS)}")
    name = str(data.get("name") or os.path.splitext(os.path.basename(where))[0])
    output = _path(data.get("output") or os.path.join("runs", name), base)
    cluster = {**copy.deepcopy(CLUSTER_DEFAULTS), **(data.get("cluster") or {})}
    unknown = sorted(set(cluster) - set(CLUSTER_DEFAULTS))
    if unknown:
        raise ValueError(f"{where} [cluster]: unknown key(s) {unknown}; allowed: {sorted(CLUSTER_DEFAULTS)}")
    if cluster["type"] not in ("local", "slurm", "pbs"):
        raise ValueError(f"{where} [cluster]: type must be local, slurm or pbs, not {cluster['type']!r}")
    defaults = data.get("defaults") or {}
    runs = []
    for k, entry in enumerate(data["runs"]):
        label = f"{where} [run {k + 1}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{label}: each run is a mapping")
        merged = {**defaults, **entry}
        unknown = sorted(set(merged) - RUN_KEYS)
        if unknown:
            raise ValueError(f"{label}: unknown key(s) {unknown}; allowed: {sorted(RUN_KEYS)}")
        for key in ("protocol", "pdb"):
            if not merged.get(key):
                raise ValueError(f"{label}: '{key}' is required")
        protocol = str(merged["protocol"])
        local = _path(protocol, base)
        protocol = local if os.path.isfile(local) else resolve_protocol_path(protocol)
        runs.extend(_expand(merged, protocol, base, output, label))
    for run in runs:  # every input and protocol checked before any run starts
        if not os.path.isfile(run.pdb):
            raise FileNotFoundError(f"{where} [{run.name}]: structure file not found: {run.pdb}")
        build_protocol(run)
    names = [r.name for r in runs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(
            f"{where}: run names must be unique; repeated: {duplicated} (give each run a 'name')"
        )
    return Campaign(
        name, output, cluster, runs, source=os.path.abspath(where) if os.path.isfile(where) else ""
    )


def _path(path: str, base: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))


def _expand(entry: dict, protocol: str, base: str, output: str, label: str) -> list[RunSpec]:
    """One entry -> its runs: one per input file (``pdb`` may be a glob) and replica."""
    pattern = _path(str(entry["pdb"]), base)
    files = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    if not files:
        raise ValueError(f"{label}: no file matches {entry['pdb']!r}")
    replicas = entry.get("replicas", 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ValueError(f"{label}: replicas must be a positive integer, not {replicas!r}")
    seed = entry.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 1:
        raise ValueError(f"{label}: seed must be a positive integer (replica k uses seed + k), not {seed!r}")
    overrides = entry.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ValueError(f"{label}: overrides must be a mapping of protocol sections")
    runs = []
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        group = str(entry.get("name") or stem) if len(files) == 1 else f"{entry.get('name') or 'run'}-{stem}"
        for k in range(replicas):
            name = group if replicas == 1 else f"{group}-r{k + 1}"
            ligand = dict(entry.get("ligand") or {})
            if ligand.get("sdf"):
                ligand["sdf"] = _path(str(ligand["sdf"]), base)
            runs.append(
                RunSpec(
                    name=name,
                    folder=os.path.join(output, name),
                    protocol=protocol,
                    pdb=path,
                    ml=entry.get("ml"),
                    seed=seed + k,
                    platform=entry.get("platform"),
                    overrides=copy.deepcopy(overrides),
                    ligand=ligand,
                    group=group,
                )
            )
    return runs


def build_protocol(run: RunSpec):
    """The run's protocol: its file with the overrides merged in (mappings key by key, other
    values replaced), its seed and ligand."""
    import yaml

    from .simulate.protocol import check_ligand, protocol_from_dict

    with open(run.protocol) as handle:
        data = yaml.safe_load(handle)
    data = _merged(data, run.overrides)
    data["random_seed"] = run.seed
    protocol = protocol_from_dict(data, where=f"{run.name} ({run.protocol} + overrides)")
    if run.ligand:
        unknown = sorted(set(run.ligand) - set(protocol.ligand))
        if unknown:
            raise ValueError(
                f"{run.name} [ligand]: unknown key(s) {unknown}; allowed: {sorted(protocol.ligand)}"
            )
        protocol.ligand.update(run.ligand)
        check_ligand(protocol.ligand, f"{run.name} [ligand]")
    protocol.source = os.path.abspath(run.protocol)
    return protocol


def _merged(base, change):
    if isinstance(base, dict) and isinstance(change, dict):
        out = dict(base)
        for key, value in change.items():
            out[key] = _merged(base.get(key), value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(change)


def execute_run(spec: dict) -> dict:
    """Run (or resume) one campaign run and analyse it; what a Dask task calls. Never raises for
    a run's own failure (bad input, a blow-up): that is returned as ``status: failed``. Output
    goes to ``<campaign>/logs/<run>.log``."""
    import contextlib
    import traceback

    run = RunSpec(**spec)
    logs = os.path.join(os.path.dirname(run.folder), "logs")
    os.makedirs(logs, exist_ok=True)
    _pick_gpu()
    start = time.time()
    log_path = os.path.join(logs, f"{run.name}.log")
    with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            from .analysis.report import analyze_run
            from .simulate import run_protocol

            protocol = build_protocol(run)
            timings = run_protocol(
                protocol, run.pdb, run.folder, run.ml, platform=run.platform, progress=False
            )
            analyze_run(run.folder)
        except Exception as exc:  # reported in the campaign table; the other runs go on
            traceback.print_exc()
            return {"name": run.name, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    result = {
        "name": run.name,
        "status": "done",
        "wall_s": round(time.time() - start, 1),
        "digest": run.digest(),
    }
    result["simulated_ns"] = simulated_ns(timings)
    _write_json(os.path.join(run.folder, DONE), result)
    return result


def simulated_ns(timings: dict) -> float:
    return sum(t.get("steps", 0) * t.get("timestep_fs", 0.0) * 1e-6 for t in timings.values())


def _pick_gpu() -> None:
    """On a local GPU cluster's worker, make only its GPU visible before OpenMM or PyTorch
    initialise CUDA. The devices are those the campaign saw (``CUDA_VISIBLE_DEVICES`` of the
    command, or all); local workers are named 0..n-1."""
    try:
        worker = require("distributed", "campaign").get_worker()
    except (ImportError, ValueError):
        return
    gpus = os.environ.get("E2FORMER_CAMPAIGN_GPUS")
    if gpus:
        devices = gpus.split(",")
        per_gpu = int(os.environ.get("E2FORMER_CAMPAIGN_RUNS_PER_GPU", "1"))
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[(int(worker.name) // per_gpu) % len(devices)]


def _write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1)
    os.replace(tmp, path)


def finished(run: RunSpec) -> bool:
    """A run that ended and was analysed with exactly this specification."""
    path = os.path.join(run.folder, DONE)
    if not os.path.isfile(path):
        return False
    with open(path) as handle:
        return json.load(handle).get("digest") == run.digest()


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def make_cluster(cluster: dict, gpus: int = 0):
    """The Dask cluster a campaign's ``cluster`` section asks for (None: connect to ``address``)."""
    if cluster.get("address"):
        return None
    if cluster["type"] in ("slurm", "pbs"):
        jobqueue = require("dask_jobqueue", "campaign", "campaigns on a batch system")
        kind = {"slurm": jobqueue.SLURMCluster, "pbs": jobqueue.PBSCluster}[cluster["type"]]
        options = dict(cluster["jobqueue"])
        resources = options.pop("worker_resources", None)
        if resources:
            spec = ",".join(f"{k}={v}" for k, v in resources.items())
            options["worker_extra_args"] = [*options.get("worker_extra_args", []), "--resources", spec]
        batch = kind(**options)
        batch.scale(jobs=int(cluster["jobs"]))
        return batch
    distributed = require("distributed", "campaign", "campaigns")
    dask = require("dask", "campaign")
    # a run whose worker process died is started again on another worker this many times
    dask.config.set({"distributed.scheduler.allowed-failures": int(cluster["retries"])})
    if gpus:
        per_gpu = int(cluster["runs_per_gpu"])
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(gpus)]
        os.environ["E2FORMER_CAMPAIGN_GPUS"] = ",".join(devices[:gpus])
        os.environ["E2FORMER_CAMPAIGN_RUNS_PER_GPU"] = str(per_gpu)
        return distributed.LocalCluster(
            n_workers=gpus * per_gpu, threads_per_worker=1, processes=True, resources={"GPU": 1.0 / per_gpu}
        )
    return distributed.LocalCluster(
        n_workers=int(cluster["workers"]),
        threads_per_worker=int(cluster["threads_per_worker"]),
        processes=True,
    )


def gpu_resource(cluster: dict, local_gpus: int) -> float:
    """The share of the ``GPU`` worker resource each run asks for (0: none): on a local GPU
    cluster, and wherever the workers declare a ``GPU`` resource (``jobqueue.worker_resources``,
    or ``gpu: true`` for workers started by hand with ``--resources GPU=1``), so that a worker
    with many threads still runs one run per GPU."""
    declared = (cluster.get("jobqueue") or {}).get("worker_resources") or {}
    if local_gpus or "GPU" in declared or cluster.get("gpu"):
        return 1.0 / int(cluster["runs_per_gpu"])
    return 0.0


def run_campaign(campaign: Campaign, progress: bool = True) -> dict:
    """Run every unfinished run of ``campaign``; write ``<output>/campaign.json`` and the report.

    Returns ``{run name: result}`` (status done/skipped/failed, wall time, error)."""
    distributed = require("distributed", "campaign", "campaigns")
    from .analysis.campaign import write_campaign_report

    os.makedirs(campaign.output, exist_ok=True)
    results = {r.name: {"name": r.name, "status": "skipped"} for r in campaign.runs if finished(r)}
    todo = [r for r in campaign.runs if r.name not in results]
    say = (lambda text: print(f"[e2former campaign] {text}", flush=True)) if progress else (lambda text: None)
    say(f"{campaign.name}: {len(campaign.runs)} runs, {len(results)} finished before, {len(todo)} to run")
    start = time.time()
    if todo:
        gpus = (
            gpu_count() if not campaign.cluster.get("address") and campaign.cluster["type"] == "local" else 0
        )
        cluster = make_cluster(campaign.cluster, gpus)
        address = campaign.cluster["address"] if cluster is None else cluster
        try:
            with distributed.Client(address) as client:
                say(f"Dask scheduler {client.scheduler.address}; dashboard {client.dashboard_link}")
                gpu_share = gpu_resource(campaign.cluster, gpus)
                extra = {"resources": {"GPU": gpu_share}} if gpu_share else {}
                futures = {
                    client.submit(
                        execute_run, asdict(r), key=f"run-{r.name}-{r.digest()}", retries=0, **extra
                    ): r
                    for r in todo
                }
                for future in distributed.as_completed(futures):
                    run = futures[future]
                    try:
                        result = future.result()
                    except Exception as exc:  # the worker died more often than the scheduler allows
                        result = {
                            "name": run.name,
                            "status": "failed",
                            "error": f"{type(exc).__name__}: {exc}",
                        }
                    results[run.name] = result
                    say(_progress_line(results, campaign, time.time() - start, result))
        finally:  # no worker (or batch job) outlives the command, also after an error or Ctrl-C
            if cluster is not None:
                cluster.close()
    ordered = {r.name: results[r.name] for r in campaign.runs}
    _write_json(
        os.path.join(campaign.output, "campaign.json"),
        {
            "name": campaign.name,
            "source": campaign.source,
            "runs": [asdict(r) for r in campaign.runs],
            "results": ordered,
        },
    )
    page = write_campaign_report(campaign.output)
    say(f"report: {page}")
    return ordered


def _progress_line(results: dict, campaign: Campaign, elapsed: float, latest: dict) -> str:
    done = sum(r["status"] == "done" for r in results.values())
    failed = sum(r["status"] == "failed" for r in results.values())
    skipped = sum(r["status"] == "skipped" for r in results.values())
    running = len(campaign.runs) - done - failed - skipped
    ns = sum(r.get("simulated_ns", 0.0) for r in results.values() if r["status"] == "done")
    what = latest["status"] + (f" ({latest['error']})" if latest.get("error") else "")
    return (
        f"{latest['name']}: {what}; {done + skipped}/{len(campaign.runs)} done, {running} running or queued, "
        f"{failed} failed; aggregate {ns / max(elapsed, 1e-9) * 86400:.3g} ns/day"
    )

"""``e2former bench speed``: one harness for speed and memory, E2Former vs its peers, in one run.

What it measures (every case in its own subprocess of this one process tree, so peak memory is
per case and a crash or out-of-memory of one case is recorded without stopping the run):

- model level: energy + forces (``torch.autograd.grad``) of
  :class:`openmmml_e2former.export.OpenMMModule` (what OpenMM runs: nm in, kJ/mol out, the
  neighbour lists built inside the call) around a seeded random E2Former network
  (``PRESETS['small'|'paper']``, LSR or local-only = ``num_long_layers=0``), float32/float64,
  eager or ``torch.compile(fullgraph=False, dynamic=False)``; median seconds of the timed calls
  after warm-up calls;
- the MACE-OFF23 small and medium architectures built with mace-torch (``ScaleShiftMACE``,
  random weights: timing does not depend on them; see :data:`MACE_OFF23`), energy + forces
  on the same systems, the neighbour list built inside the timed call by vesin-torch (the
  library our module uses) when it imports, else by ``mace.data.get_neighborhood``
  (matscipy, on the CPU); skipped with a status when mace-torch does not import;
- OpenMM: ms/step and ns/day (1 fs) of villin in water (amber14 + TIP3P-FB, PME 1 nm, HBonds,
  LangevinMiddle 300 K) with an ML region built by ``MLPotential('e2former-lsr'|'e2former',
  randomInit=True, seed=0, preset=..., precision=..., backend=..., useCUDAGraphs=...)``,
  ``createMixedSystem`` for a region (the protein, the first ~100 atoms of whole residues) or
  ``createSystem`` when the whole (replicated) box is the ML region; pure AMBER14 as the
  ceiling. Median ms/step over timed blocks of steps after warm-up steps;
- peak memory: ``ru_maxrss`` of the case's process (includes ~1 GiB of libraries; the
  increase over the RSS after the imports is recorded too) and, on CUDA,
  ``torch.cuda.max_memory_allocated``.

The JSON holds the machine, versions, threads, load average at start and end, every case row
(parameters, status, median, all repeats, peak memory), ratios computed from those rows (LSR /
local-only, LSR small / MACE-OFF23 small, paper / MACE-OFF23 medium, ...), log-log exponents
of time and memory vs atoms per series, and the :data:`TARGETS` table (target, measured,
met?) computed from the same rows. A PNG (time and memory vs atoms, log-log, exponents in
the legend) goes next to it. Targets are reported, never asserted.

    e2former bench speed --device cpu --quick            # CI smoke version, ~2 min on 2 cores
    e2former bench speed --device cuda --budget-s 480    # the GPU run, headline cases first
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from ..optional import available, require
from .peers import MACE_OFF23, MACE_OFF23_COMMON, MACE_OFF23_ELEMENTS, MACE_OFF23_SOURCE, build_mace_off23

# --------------------------------------------------------------------------- #
# Peers and targets
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Target:
    """A speed/memory target: ``metric`` (a key of :func:`metrics`) compared with ``limit``."""

    name: str
    metric: str
    op: str  # "<=" or "=="
    limit: float | bool
    unit: str = ""


#: The targets the harness reports (never asserts). CPU targets use the ``--threads`` run
#: (2 threads in the issue). Metric keys are documented in :func:`metrics`.
TARGETS = [
    Target(
        "GPU villin ML/MM (ML = 582 protein atoms, 1 fs), small model",
        "gpu.mlmm.protein.small.ms_per_step",
        "<=",
        8.0,
        "ms/step",
    ),
    Target("GPU villin ML/MM, paper-size model", "gpu.mlmm.protein.paper.ms_per_step", "<=", 30.0, "ms/step"),
    Target(
        "GPU villin ML/MM, 100-atom ML region, small model",
        "gpu.mlmm.first100.small.ms_per_step",
        "<=",
        3.0,
        "ms/step",
    ),
    Target("GPU whole 8867-atom box as ML region fits and runs", "gpu.ml_all.8867.runs", "==", True),
    Target(
        "GPU whole 8867-atom box as ML region, recompute (Python-side backend)",
        "gpu.ml_all.8867.runs_recompute",
        "==",
        True,
    ),
    Target(
        "GPU time ~ N^x up to >= 20,000 atoms (small LSR, periodic boxes)",
        "gpu.scaling.time_exponent",
        "<=",
        1.1,
    ),
    Target("GPU memory linear in N up to >= 20,000 atoms", "gpu.scaling.memory_exponent", "<=", 1.1),
    Target(
        "CPU LSR small / MACE-OFF23 small time at 582 atoms", "cpu.582.lsr_small_over_mace_small", "<=", 0.5
    ),
    Target(
        "CPU LSR small / MACE-OFF23 small time at 2000 atoms", "cpu.2000.lsr_small_over_mace_small", "<=", 0.5
    ),
    Target(
        "CPU LSR / local-only at 2000 atoms (water in the ML region)",
        "cpu.2000.lsr_over_local.small",
        "<=",
        1.3,
    ),
    Target(
        "CPU LSR small (torch.compile) / MACE-OFF23 small at 582 atoms",
        "cpu.582.lsr_small_compiled_over_mace_small",
        "<=",
        0.5,
    ),
    Target(
        "CPU LSR small (torch.compile) / MACE-OFF23 small at 2000 atoms",
        "cpu.2000.lsr_small_compiled_over_mace_small",
        "<=",
        0.5,
    ),
    Target(
        "CPU LSR / local-only at 2000 atoms, both torch.compile",
        "cpu.2000.lsr_over_local.small_compiled",
        "<=",
        1.3,
    ),
    Target("CPU peak RSS, LSR small at 2000 atoms", "cpu.2000.small.peak_rss_gib", "<=", 3.0, "GiB"),
    Target(
        "CPU peak RSS, LSR small at 2000 atoms, recompute (Python-side backend)",
        "cpu.2000.small.peak_rss_gib_recompute",
        "<=",
        3.0,
        "GiB",
    ),
    Target(
        "CPU peak RSS, LSR small at 2000 atoms, recompute + freed memory released",
        "cpu.2000.small.peak_rss_gib_recompute_release",
        "<=",
        3.0,
        "GiB",
    ),
    Target(
        "CPU peak RSS, LSR small at 2000 atoms, torch.compile",
        "cpu.2000.small.peak_rss_gib_compile",
        "<=",
        3.0,
        "GiB",
    ),
    Target(
        "CPU peak RSS, LSR small at 2000 atoms, torch.compile + recompute",
        "cpu.2000.small.peak_rss_gib_compile_recompute",
        "<=",
        3.0,
        "GiB",
    ),
    Target("CPU paper size fits 16 GiB at 2000 atoms", "cpu.2000.paper.peak_rss_gib", "<=", 16.0, "GiB"),
    Target(
        "CPU paper size fits 16 GiB at 2000 atoms, recompute + freed memory released",
        "cpu.2000.paper.peak_rss_gib_recompute_release",
        "<=",
        16.0,
        "GiB",
    ),
    Target(
        "CPU paper size / MACE-OFF23 medium time at 582 atoms", "cpu.582.paper_over_mace_medium", "<=", 1.0
    ),
]

RESULT_FILE_ENV = "E2FORMER_BENCH_RESULT_FILE"

# --------------------------------------------------------------------------- #
# Cases
# --------------------------------------------------------------------------- #

# (warm-up calls, timed calls) of a model-level case by size label
CPU_SCHEDULE = {100: (1, 5), 582: (1, 3), 2000: (1, 3), 8867: (0, 1), 17734: (0, 1), 35468: (0, 1)}
GPU_SCHEDULE = {100: (3, 10), 582: (3, 10), 2000: (3, 10), 8867: (2, 5), 17734: (2, 5), 35468: (1, 3)}
QUICK_SCHEDULE = (1, 2)
# OpenMM (warm-up steps, steps per block, blocks) by (device, ML or MM)
STEP_SCHEDULE = {
    ("cpu", "ml"): (2, 3, 3),
    ("cpu", "mm"): (10, 20, 5),
    ("cuda", "ml"): (20, 20, 5),
    ("cuda", "mm"): (100, 500, 5),
}
QUICK_STEPS = {"ml": (2, 1, 2), "mm": (2, 5, 2)}


def model_case(
    model: str,
    preset: str,
    atoms: int,
    device: str,
    dtype: str = "float32",
    compile=False,
    recompute=False,
    release_memory=False,
) -> dict:
    """A model-level case: ``model`` is 'e2former-lsr', 'e2former' (local-only) or 'mace-off23'.
    ``recompute``: the network recomputes each block's activations in the backward pass
    (``E2FormerLSR.recompute``; eager and Python-side backend only); ``release_memory``: the
    worker gives freed host memory back (``E2FORMER_RETAIN_FREED_MEMORY=release``)."""
    case = {
        "kind": "model",
        "model": model,
        "preset": preset,
        "dtype": dtype,
        "device": device,
        "atoms": atoms,
        "compile": bool(compile),
    }
    if recompute:
        case["recompute"] = True
    if release_memory:
        case["release_memory"] = True
    return case


def openmm_case(
    model: str,
    preset: str,
    region: str,
    device: str,
    backend="torchforce",
    graphs=False,
    dtype: str = "float32",
    atoms: int | None = None,
    recompute=False,
) -> dict:
    """An OpenMM case; ``model`` 'amber14' is pure MM (region 'mm'); ``recompute`` needs
    ``backend='pythonforce'`` (the potential's ``recompute`` option)."""
    if atoms is None:
        atoms = {"protein": 582, "first100": 100, "all": 8867, "mm": 8867}[region]
    return {
        "kind": "openmm",
        "model": model,
        "preset": preset,
        "dtype": dtype,
        "device": device,
        "atoms": atoms,
        "region": region,
        "backend": backend,
        "cuda_graphs": bool(graphs),
        **({"recompute": True} if recompute else {}),
    }


def case_id(case: dict) -> str:
    """A readable unique id, e.g. ``model/e2former-lsr-small/float32/cpu/582``."""
    name = case["model"] if case["model"] == "amber14" else f"{case['model']}-{case['preset']}"
    parts = [case["kind"], name, case["dtype"], case["device"], str(case["atoms"])]
    if case["kind"] == "openmm":
        parts.append(f"ml={case['region']}")
        parts.append(case["backend"] + ("+graphs" if case["cuda_graphs"] else ""))
    elif case.get("compile"):
        parts.append("compile")
    if case.get("recompute"):
        parts.append("recompute")
    if case.get("release_memory"):
        parts.append("release")
    return "/".join(parts)


def series_name(case: dict) -> str:
    """The series a case belongs to in the exponent fits and the plot (all but its size)."""
    return case_id(case).replace(f"/{case['atoms']}", "", 1)


def plan(device: str, quick: bool = False, sizes=None, compile_cases: bool = True) -> list[dict]:
    """The ordered case list: headline cases first (see the module docstring)."""
    if quick:
        chosen = sorted(sizes or [100, 582])
        cases = [openmm_case("amber14", "-", "mm", device, backend="-")]
        region = "protein" if 582 in chosen else "first100"
        cases.append(openmm_case("e2former-lsr", "small", region, device))
        for n in chosen:
            cases += [
                model_case("e2former-lsr", "small", n, device),
                model_case("e2former", "small", n, device),
            ]
        cases.append(model_case("mace-off23", "small", chosen[0], device))
        return cases
    default = [100, 582, 2000, 8867] if device == "cpu" else [100, 582, 2000, 8867, 17734, 35468]
    chosen = set(sizes or default)

    def peers(n):
        return [
            model_case("e2former-lsr", "small", n, device),
            model_case("e2former", "small", n, device),
            model_case("mace-off23", "small", n, device),
            model_case("e2former-lsr", "paper", n, device),
            model_case("mace-off23", "medium", n, device),
        ]

    cases: list[dict] = []
    if device == "cuda":
        cases += [
            openmm_case("e2former-lsr", "small", "protein", device, graphs=True),
            openmm_case("e2former-lsr", "small", "protein", device, graphs=False),
            openmm_case("e2former-lsr", "small", "protein", device, backend="pythonforce"),
            openmm_case("e2former-lsr", "paper", "protein", device, graphs=True),
            openmm_case("e2former-lsr", "small", "first100", device, graphs=True),
            openmm_case("amber14", "-", "mm", device, backend="-"),
            openmm_case("e2former", "small", "protein", device, graphs=True),
        ]
        for n in (582, 2000, 100, 8867):
            cases += peers(n)
        cases.append(openmm_case("e2former-lsr", "small", "all", device, graphs=True))
        cases += [
            model_case("e2former-lsr", "paper", 2000, device, recompute=True),
            model_case("e2former-lsr", "small", 8867, device, recompute=True),
            model_case("e2former-lsr", "paper", 8867, device, recompute=True),
            openmm_case("e2former-lsr", "small", "all", device, backend="pythonforce", recompute=True),
        ]
        for n in (17734, 35468):
            cases += [
                model_case("e2former-lsr", "small", n, device),
                model_case("e2former", "small", n, device),
                model_case("mace-off23", "small", n, device),
            ]
        cases.append(openmm_case("e2former-lsr", "small", "all", device, graphs=True, atoms=17734))
        cases += [
            model_case("e2former-lsr", "small", 582, device, "float64"),
            model_case("e2former", "small", 582, device, "float64"),
            model_case("mace-off23", "small", 582, device, "float64"),
            openmm_case("e2former-lsr", "small", "protein", device, graphs=True, dtype="float64"),
            openmm_case("e2former-lsr", "paper", "protein", device, graphs=False),
        ]
    else:
        for n in (582, 2000):
            cases += peers(n)
        cases += [
            model_case("e2former-lsr", "small", 2000, device, recompute=True),
            model_case("e2former-lsr", "small", 2000, device, release_memory=True),
            model_case("e2former-lsr", "small", 2000, device, recompute=True, release_memory=True),
            model_case("e2former-lsr", "paper", 2000, device, recompute=True, release_memory=True),
        ]
        cases += [
            openmm_case("amber14", "-", "mm", device, backend="-"),
            openmm_case("e2former-lsr", "small", "protein", device),
            openmm_case("e2former-lsr", "small", "protein", device, backend="pythonforce"),
            openmm_case("e2former", "small", "protein", device),
            openmm_case("e2former-lsr", "small", "first100", device),
        ]
        cases += peers(100)
        cases += [
            model_case("e2former-lsr", "small", 582, device, "float64"),
            model_case("e2former", "small", 582, device, "float64"),
            model_case("mace-off23", "small", 582, device, "float64"),
        ]
        cases += [
            model_case("e2former", "small", 8867, device),
            model_case("mace-off23", "small", 8867, device),
            model_case("e2former-lsr", "small", 8867, device),
            model_case("e2former-lsr", "small", 8867, device, recompute=True),
        ]
    if compile_cases:
        for n in (582, 2000) if device == "cpu" else (582,):
            cases += [
                model_case("e2former-lsr", "small", n, device, compile=True),
                model_case("e2former", "small", n, device, compile=True),
            ]
        if device == "cpu":
            cases.append(model_case("e2former-lsr", "small", 2000, device, compile=True, recompute=True))
    return [c for c in cases if c["atoms"] in chosen or c["model"] == "amber14"]


def select(cases: list[dict], patterns) -> list[dict]:
    """Cases whose id contains, or fnmatch-es, any of ``patterns`` (all when none given)."""
    if not patterns:
        return cases
    return [c for c in cases if any(p in case_id(c) or fnmatch.fnmatch(case_id(c), p) for p in patterns)]


# --------------------------------------------------------------------------- #
# Worker (one case, in its own process)
# --------------------------------------------------------------------------- #


def _rss_mib() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Recorder:
    """The case's result dict, rewritten to the result file after every measurement so the
    parent keeps what was measured before a timeout or a crash."""

    def __init__(self, path: str | None, case: dict):
        self.path = path
        self.data = {"status": "running", "phase": "start"}
        self.case = case

    def update(self, **values) -> None:
        self.data.update(values)
        self.data["peak_rss_mib"] = _peak_rss_mib()
        if self.case["device"] == "cuda":
            try:
                import torch

                if torch.cuda.is_initialized():
                    self.data["gpu_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
            except Exception:  # noqa: BLE001  (memory probe only)
                pass
        if self.path:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as handle:
                json.dump(self.data, handle, default=_json_default)
            os.replace(tmp, self.path)


def run_worker(case: dict, result_file: str | None, threads: int, mem_gib: float) -> dict:
    """Measure one case; returns (and keeps writing) its result dict."""
    rec = _Recorder(result_file, case)
    import torch

    torch.set_num_threads(threads)
    import openmmml_e2former  # noqa: F401  (vesin-torch operators, openmm-torch plug-ins)
    from openmmml_e2former.host_memory import malloc_library, retain_freed_memory

    # every case alike, peers included: our OpenMM module sets this for its users, so the
    # peers get it too (E2FORMER_RETAIN_FREED_MEMORY=0 measures all with glibc's defaults);
    # a case with release_memory gives freed blocks back instead (host_memory.py)
    if case.get("release_memory"):
        os.environ["E2FORMER_RETAIN_FREED_MEMORY"] = "release"
    retained = retain_freed_memory()
    allocator = malloc_library()  # glibc's settings apply only when glibc serves malloc
    released = bool(case.get("release_memory")) and allocator == "glibc"
    rec.update(
        rss_after_imports_mib=_rss_mib(),
        torch_threads=torch.get_num_threads(),
        retain_freed_memory=retained,
        host_memory="release" if released else ("retain" if retained else "default"),
        allocator=allocator,
        phase="setup",
    )
    if case["device"] == "cpu" and mem_gib > 0:
        _limit_address_space(mem_gib)
        rec.update(memory_cap_gib=mem_gib)
    if case["device"] == "cuda":
        if not torch.cuda.is_available():
            rec.update(status="skipped: no CUDA device visible to PyTorch")
            return rec.data
        rec.update(gpu=torch.cuda.get_device_name(0))  # initialises CUDA
        torch.cuda.reset_peak_memory_stats()
    try:
        if case["kind"] == "openmm":
            _openmm_case(case, rec, threads)
        else:
            _model_case(case, rec)
        if rec.data["status"] == "running":
            rec.update(status="ok")
    except _Skip as why:
        rec.update(status=f"skipped: {why}")
    except BaseException as error:  # noqa: BLE001  (every failure becomes the case's status)
        message = " ".join(str(error).strip().split())[:300]
        lowered = message.lower()
        oom = isinstance(error, MemoryError) or "out of memory" in lowered or "alloc" in lowered
        kind = "out of memory" if oom else "error"
        if case.get("compile") and rec.data.get("phase") in ("compile", "warm-up"):
            kind = "compile failed" if not oom else kind
        rec.update(
            status=f"{kind}: {type(error).__name__}: {message}",
            traceback_tail=traceback.format_exc().strip().splitlines()[-6:],
        )
    rec.update(phase="done")
    return rec.data


def _limit_address_space(extra_gib: float) -> None:
    """Cap this process's address space at its current size + ``extra_gib`` so an oversized
    allocation raises instead of waking the OOM killer on a shared machine."""
    size = 0
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmSize:"):
                size = int(line.split()[1]) * 1024
    limit = size + int(extra_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _time_calls(call, case: dict, rec: _Recorder, warmup: int, repeats: int) -> None:
    times, warm = [], []
    rec.update(phase="compile" if case.get("compile") else "warm-up")
    for _ in range(warmup):
        t0 = time.perf_counter()
        call()
        _sync(case["device"])
        warm.append(time.perf_counter() - t0)
        rec.update(warmup_times_s=warm, phase="warm-up")
    rec.update(phase="timing")
    for _ in range(repeats):
        t0 = time.perf_counter()
        energy = call()
        _sync(case["device"])
        times.append(time.perf_counter() - t0)
        if not math.isfinite(energy):
            raise FloatingPointError(f"non-finite energy {energy}")
        rec.update(times_s=times, median_s=statistics.median(times), energy=energy)


def _model_case(case: dict, rec: _Recorder) -> None:
    import torch

    from .systems import system_for_size

    system = system_for_size(case["atoms"])
    rec.update(n_atoms=system.n_atoms, periodic=system.periodic, system=system.description)
    dtype = getattr(torch, case["dtype"])
    device = torch.device(case["device"])
    if case["model"] == "mace-off23":
        call, info = _mace_call(case, system, dtype, device)
    else:
        call, info = _e2former_call(case, system, dtype, device)
    rec.update(**info)
    quick = case.get("quick", False)
    schedule = GPU_SCHEDULE if case["device"] == "cuda" else CPU_SCHEDULE
    warmup, repeats = QUICK_SCHEDULE if quick else schedule.get(case["atoms"], (1, 2))
    warmup, repeats = case.get("warmup", warmup), case.get("repeats", repeats)
    if case.get("compile"):
        warmup = max(warmup, 1)  # the first call compiles
    rec.update(warmup=warmup, repeats=repeats)
    _time_calls(call, case, rec, warmup, repeats)


def _e2former_call(case: dict, system, dtype, device):
    """energy + forces of the OpenMMModule around a seeded random network; returns (call, info)."""
    import torch

    from ..export import OpenMMModule, cut_bonds
    from ..fragments import fragment_ids_from_topology
    from ..model import PRESETS, E2FormerLSR

    changes = {} if case["model"] == "e2former-lsr" else {"num_long_layers": 0}
    torch.manual_seed(0)
    network = E2FormerLSR(PRESETS[case["preset"]](**changes)).eval()
    network.recompute = bool(case.get("recompute", False))
    atoms = list(system.topology.atoms())
    numbers = [atoms[i].element.atomic_number for i in system.ml_atoms]
    fragments = fragment_ids_from_topology(system.topology, system.ml_atoms)
    caps = cut_bonds(system.topology, system.ml_atoms) if not system.periodic else []
    module = OpenMMModule(network, numbers, fragments, 0.0, system.ml_atoms, caps, system.periodic, dtype)
    module = module.eval().to(device)
    positions = torch.tensor(system.positions_nm, dtype=dtype, device=device)
    box = None if system.box_nm is None else torch.tensor(system.box_nm, dtype=dtype, device=device)
    runner = module
    if case.get("compile"):
        # plan the fixed-shape graphs eagerly, then one graph (CUDA graphs on a GPU)
        module.host_checks = False
        module.plan(positions, box)
        mode = "reduce-overhead" if torch.device(device).type == "cuda" else None
        runner = torch.compile(module, fullgraph=True, dynamic=False, mode=mode)

    def call() -> float:
        p = positions.detach().clone().requires_grad_(True)
        energy = runner(p, box)
        (grad,) = torch.autograd.grad(energy, p)
        return float(energy.detach())

    info = {
        "parameters": sum(p.numel() for p in network.parameters()),
        "fragments": int(max(fragments) + 1) if len(fragments) else 0,
        "caps": len(caps),
        "charge": 0.0,
    }
    return call, info


def _mace_call(case: dict, system, dtype, device):
    """energy + forces of a random MACE-OFF23-sized ScaleShiftMACE; returns (call, info)."""
    if not available("mace"):
        raise _Skip("mace-torch not installed")
    if case.get("compile"):
        raise _Skip("torch.compile of MACE is not part of this harness")
    import torch

    mace = require("mace", "bench", "the MACE-OFF23 peers of the benchmarks")

    hp = {**MACE_OFF23_COMMON, **MACE_OFF23[case["preset"]]}
    z_table = MACE_OFF23_ELEMENTS
    atoms = list(system.topology.atoms())
    numbers = [atoms[i].element.atomic_number for i in system.ml_atoms]
    unknown = sorted(set(numbers) - set(z_table))
    if unknown:
        raise ValueError(f"elements {unknown} are not in MACE-OFF23's table")
    model, hp = build_mace_off23(case["preset"], dtype, seed=0)
    model = model.to(dtype).to(device).eval()
    n = len(numbers)
    index = torch.tensor([z_table.index(z) for z in numbers], device=device)
    node_attrs = torch.nn.functional.one_hot(index, len(z_table)).to(dtype)
    angstrom = torch.tensor(system.positions_nm[system.ml_atoms] * 10.0, dtype=dtype, device=device)
    box = torch.zeros(3, 3, dtype=dtype, device=device)
    if system.periodic:
        box = torch.tensor(system.box_nm * 10.0, dtype=dtype, device=device)
    batch = torch.zeros(n, dtype=torch.long, device=device)
    ptr = torch.tensor([0, n], device=device)
    head = torch.zeros(1, dtype=torch.long, device=device)
    neighbours, nl_name = _neighbour_list_fn(hp["r_max"], system.periodic)

    def call() -> float:
        edge_index, unit_shifts = neighbours(angstrom, box)
        data = {
            "positions": angstrom.detach().clone(),
            "node_attrs": node_attrs,
            "edge_index": edge_index,
            "shifts": unit_shifts @ box,
            "unit_shifts": unit_shifts,
            "cell": box,
            "batch": batch,
            "ptr": ptr,
            "head": head,
        }
        out = model(data, training=False, compute_force=True)
        return float(out["energy"].detach().sum())

    info = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "mace_version": getattr(mace, "__version__", None),
        "mace_hyperparameters": hp,
        "mace_source": MACE_OFF23_SOURCE,
        "neighbour_list": nl_name,
    }
    return call, info


def _neighbour_list_fn(cutoff: float, periodic: bool):
    """(fn(positions [n,3] A, box [3,3] A) -> (edge_index [2,E], unit shifts [E,3]), its name)."""
    import torch

    try:
        import vesin_torch

        calculator = vesin_torch.NeighborList(cutoff=cutoff, full_list=True)

        def vesin(positions, box):
            i, j, shifts = calculator.compute(points=positions, box=box, periodic=periodic, quantities="ijS")
            return torch.stack([i, j]).long(), shifts.to(positions.dtype)

        return vesin, "vesin-torch (full list, inside the timed call)"
    except ImportError:
        get_neighborhood = require("mace.data.neighborhood", "bench").get_neighborhood

        def matscipy(positions, box):
            pbc = (periodic,) * 3
            cell = box.detach().cpu().numpy() if periodic else None
            edge_index, _, unit_shifts, _ = get_neighborhood(
                positions.detach().cpu().numpy(), cutoff, pbc, cell
            )
            return (
                torch.as_tensor(edge_index, device=positions.device),
                torch.as_tensor(unit_shifts, dtype=positions.dtype, device=positions.device),
            )

        return matscipy, "mace.data.get_neighborhood (matscipy, CPU, inside the timed call)"


class _Skip(Exception):
    pass


def _openmm_case(case: dict, rec: _Recorder, threads: int) -> None:
    import numpy as np
    import openmm
    import openmm.unit as unit

    from .systems import REPLICAS, ml_region, mm_system, replicate, villin

    topology, positions, box = villin()
    if case["region"] == "all" and case["atoms"] != 8867:
        topology, positions, box = replicate(topology, positions, box, REPLICAS[case["atoms"]])
    platform_name = "CUDA" if case["device"] == "cuda" else "CPU"
    try:
        platform = openmm.Platform.getPlatformByName(platform_name)
    except Exception as error:  # noqa: BLE001
        raise _Skip(f"OpenMM has no {platform_name} platform ({error})") from None
    properties = {"Threads": str(threads)} if platform_name == "CPU" else {}
    if case["model"] == "amber14":
        ml_atoms: list[int] = []
    else:
        region = ml_region(topology, case["region"])
        ml_atoms = list(range(topology.getNumAtoms())) if region is None else region
    rec.update(
        n_atoms=topology.getNumAtoms(),
        ml_atoms=len(ml_atoms),
        platform=platform_name,
        platform_properties=properties,
        phase="create system",
    )
    t0 = time.perf_counter()
    if case["model"] == "amber14":
        system = mm_system(topology)
    else:
        from openmmml import MLPotential

        potential = MLPotential(
            case["model"],
            randomInit=True,
            seed=0,
            preset=case["preset"],
            precision="double" if case["dtype"] == "float64" else "single",
            backend=case["backend"],
            useCUDAGraphs=bool(case["cuda_graphs"]),
            **({"recompute": True} if case.get("recompute") else {}),
        )
        if case["region"] == "all":
            system = potential.createSystem(topology)
        else:
            system = potential.createMixedSystem(topology, mm_system(topology), ml_atoms)
    rec.update(create_system_s=time.perf_counter() - t0, phase="context")
    integrator = openmm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 1 / unit.picosecond, 1.0 * unit.femtoseconds
    )
    integrator.setRandomNumberSeed(1)
    t0 = time.perf_counter()
    context = openmm.Context(system, integrator, platform, properties)
    context.setPeriodicBoxVectors(*[openmm.Vec3(*map(float, v)) for v in box])
    context.setPositions(unit.Quantity(np.asarray(positions), unit.nanometer))
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    rec.update(context_and_first_energy_s=time.perf_counter() - t0, initial_potential_kj_mol=energy)
    kind = "mm" if case["model"] == "amber14" else "ml"
    warmup, per_block, blocks = STEP_SCHEDULE[(case["device"], kind)]
    if case.get("quick"):
        warmup, per_block, blocks = QUICK_STEPS[kind]
    warmup = case.get("warmup_steps", warmup)
    per_block = case.get("block_steps", per_block)
    blocks = case.get("blocks", blocks)
    rec.update(warmup_steps=warmup, block_steps=per_block, blocks=blocks, phase="warm-up")
    t0 = time.perf_counter()
    integrator.step(warmup)
    context.getState(getEnergy=False)
    rec.update(warmup_s=time.perf_counter() - t0, phase="timing")
    block_ms = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        integrator.step(per_block)
        context.getState(getEnergy=False)  # waits for the steps to finish
        block_ms.append(1000.0 * (time.perf_counter() - t0) / per_block)
        ms = statistics.median(block_ms)
        rec.update(block_ms_per_step=block_ms, ms_per_step=ms, ns_per_day=86.4 / ms)
    final = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if not math.isfinite(final):
        raise FloatingPointError(
            f"non-finite potential energy {final} after {warmup + per_block * blocks} steps"
        )
    rec.update(final_potential_kj_mol=final)


# --------------------------------------------------------------------------- #
# Parent: run the cases
# --------------------------------------------------------------------------- #


def run_case(case: dict, threads: int, timeout: float, mem_gib: float, log_dir: Path | None = None) -> dict:
    """Run one case in a subprocess (its own session, killed as a group on timeout)."""
    if case["kind"] == "model" and case["model"] == "mace-off23" and not available("mace"):
        return {"status": "skipped: mace-torch not installed"}
    with tempfile.TemporaryDirectory(prefix="e2former-bench-") as tmp:
        result_file = os.path.join(tmp, "result.json")
        env = dict(os.environ)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [
            sys.executable,
            "-m",
            "openmmml_e2former.bench.speed",
            "--worker",
            json.dumps(case),
            "--result-file",
            result_file,
            "--threads",
            str(threads),
            "--mem-gib",
            str(mem_gib),
        ]
        log_path = os.path.join(tmp, "log.txt")
        t0 = time.perf_counter()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
        wall = time.perf_counter() - t0
        result = {}
        if os.path.exists(result_file):
            try:
                with open(result_file) as handle:
                    result = json.load(handle)
            except (OSError, ValueError):
                result = {}
        with open(log_path, errors="replace") as handle:
            tail = handle.read().strip().splitlines()[-8:]
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            with open(log_path, errors="replace") as src:
                (log_dir / (case_id(case).replace("/", "_") + ".log")).write_text(src.read())
    result["wall_s"] = wall
    if timed_out:
        measured = len(result.get("times_s", result.get("block_ms_per_step", [])))
        result["status"] = (
            f"timed out after {timeout:.0f} s (phase {result.get('phase', '?')}, {measured} timed)"
        )
    elif proc.returncode != 0 or result.get("status") in (None, "running"):
        code = proc.returncode
        why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        if code == -9:
            why += " (likely out of memory)"
        result["status"] = f"crashed: {why} in phase {result.get('phase', '?')}"
        result["log_tail"] = tail
    elif not result["status"].startswith("ok"):
        result["log_tail"] = tail
    return result


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def run_all(cases: list[dict], args) -> list[dict]:
    rows = []
    start = time.monotonic()
    for k, case in enumerate(cases, 1):
        cid = case_id(case)
        elapsed = time.monotonic() - start
        left = None if args.budget_s is None else args.budget_s - elapsed
        if left is not None and left <= 5:
            rows.append({"id": cid, **case, "status": "skipped: wall-clock budget spent"})
            continue
        timeout = args.timeout_per_case if left is None else min(args.timeout_per_case, left)
        print(f"[{k}/{len(cases)}] {cid} ...", flush=True)
        load_before = os.getloadavg()[0]
        result = run_case({**case, "quick": args.quick}, args.threads, timeout, args.mem_gib, args.log_dir)
        row = {"id": cid, **case, **{k2: v for k2, v in result.items() if k2 not in case}}
        row["load_1min_before_after"] = [load_before, os.getloadavg()[0]]
        rows.append(row)
        print(f"    {row['status']}  {_summary(row)}", flush=True)
    return rows


def _summary(row: dict) -> str:
    parts = []
    if row.get("median_s") is not None:
        parts.append(f"median {row['median_s']:.4g} s")
    if row.get("ms_per_step") is not None:
        parts.append(f"{row['ms_per_step']:.4g} ms/step, {row['ns_per_day']:.3g} ns/day")
    if row.get("peak_rss_mib") is not None:
        parts.append(f"peak RSS {row['peak_rss_mib']:.0f} MiB")
    if row.get("gpu_max_allocated_mib") is not None:
        parts.append(f"GPU {row['gpu_max_allocated_mib']:.0f} MiB")
    if row.get("wall_s") is not None:
        parts.append(f"({row['wall_s']:.0f} s wall)")
    return ", ".join(parts)


# --------------------------------------------------------------------------- #
# Analysis: ratios, exponents, metrics, targets
# --------------------------------------------------------------------------- #


def ok(row: dict | None) -> bool:
    return bool(row) and row.get("status") == "ok"


def _time(row: dict) -> float | None:
    """The row's time: median seconds (model level) or ms/step (OpenMM)."""
    return row.get("median_s") if row.get("kind") == "model" else row.get("ms_per_step")


#: case keys that rows may leave out (older results, cases without the option)
_CASE_DEFAULTS = {"recompute": False, "release_memory": False}
_PLAIN = dict(_CASE_DEFAULTS)


def _find(rows, **keys) -> dict | None:
    """The first row with these case keys; a release-memory row counts only where it released
    (glibc only: ``host_memory.py``; rows from before ``host_memory`` was recorded did)."""
    for row in rows:
        if row.get("release_memory") and row.get("host_memory", "release") != "release":
            continue
        if all(row.get(k, _CASE_DEFAULTS.get(k)) == v for k, v in keys.items()):
            return row
    return None


def _k(model: str, preset: str) -> dict:
    return {"model": model, "preset": preset}


#: (ratio name, numerator case keys, denominator case keys), model level, per device/dtype/size
MODEL_RATIOS = [
    ("lsr_over_local.small", _k("e2former-lsr", "small"), _k("e2former", "small")),
    ("lsr_over_local.paper", _k("e2former-lsr", "paper"), _k("e2former", "paper")),
    ("lsr_small_over_mace_small", _k("e2former-lsr", "small"), _k("mace-off23", "small")),
    ("local_small_over_mace_small", _k("e2former", "small"), _k("mace-off23", "small")),
    ("paper_over_mace_medium", _k("e2former-lsr", "paper"), _k("mace-off23", "medium")),
    ("paper_over_small", _k("e2former-lsr", "paper"), _k("e2former-lsr", "small")),
]
#: OpenMM ratios (ms/step), per device/dtype and ML region
OPENMM_RATIOS = [
    (
        "pythonforce_over_torchforce",
        {"backend": "pythonforce", "cuda_graphs": False},
        {"backend": "torchforce", "cuda_graphs": False},
    ),
    (
        "graphs_over_no_graphs",
        {"backend": "torchforce", "cuda_graphs": True},
        {"backend": "torchforce", "cuda_graphs": False},
    ),
]


def ratios(rows: list[dict]) -> list[dict]:
    """Ratios of times measured in this run (each names the two row ids it divides)."""
    out = []
    groups = {(r["kind"], r["device"], r["dtype"], r["atoms"]) for r in rows}
    for kind, device, dtype, atoms in sorted(groups, key=str):
        base = {"kind": kind, "device": device, "dtype": dtype, "atoms": atoms}
        if kind == "model":
            plain = {"compile": False, **_PLAIN}
            specs = [(n, {**a, **plain}, {**b, **plain}) for n, a, b in MODEL_RATIOS]
            small_lsr = {"model": "e2former-lsr", "preset": "small"}
            specs.append(
                (
                    "compiled_over_eager.small_lsr",
                    {**small_lsr, **plain, "compile": True},
                    {**small_lsr, **plain},
                )
            )
            # both compiled (torch.compile fuses the pair MLPs' elementwise work on the CPU too);
            # the MACE peer stays eager, as openmm-ml runs it
            compiled = {**plain, "compile": True}
            specs.append(
                (
                    "lsr_over_local.small_compiled",
                    {**small_lsr, **compiled},
                    {"model": "e2former", "preset": "small", **compiled},
                )
            )
            specs.append(
                (
                    "lsr_small_compiled_over_mace_small",
                    {**small_lsr, **compiled},
                    {"model": "mace-off23", "preset": "small", **plain},
                )
            )
            specs.append(
                (
                    "release_over_plain.small_lsr",
                    {**small_lsr, **plain, "release_memory": True},
                    {**small_lsr, **plain},
                )
            )
            for preset in ("small", "paper"):
                for release, suffix in ((False, ""), (True, "_release")):
                    variant = {"compile": False, "recompute": True, "release_memory": release}
                    specs.append(
                        (
                            f"recompute{suffix}_over_plain.{preset}_lsr",
                            {"model": "e2former-lsr", "preset": preset, **variant},
                            {"model": "e2former-lsr", "preset": preset, **plain},
                        )
                    )
        else:
            specs = []
            for region in ("protein", "first100", "all"):
                lsr = {"model": "e2former-lsr", "preset": "small", "region": region, **_PLAIN}
                specs += [(f"{n}.{region}", {**lsr, **a}, {**lsr, **b}) for n, a, b in OPENMM_RATIOS]
                specs.append(
                    (
                        f"lsr_over_local.{region}",
                        {**lsr, "backend": "torchforce", "cuda_graphs": device == "cuda"},
                        {
                            **lsr,
                            "model": "e2former",
                            "backend": "torchforce",
                            "cuda_graphs": device == "cuda",
                        },
                    )
                )
        for name, a, b in specs:
            num, den = _find(rows, **base, **a), _find(rows, **base, **b)
            if ok(num) and ok(den) and _time(num) and _time(den):
                out.append(
                    {
                        "name": name,
                        "kind": kind,
                        "device": device,
                        "dtype": dtype,
                        "atoms": atoms,
                        "value": _time(num) / _time(den),
                        "numerator": num["id"],
                        "denominator": den["id"],
                    }
                )
    # ML/MM over pure MM (the AMBER14 ceiling), per device
    for row in rows:
        if row["kind"] == "openmm" and row["model"] != "amber14" and ok(row):
            mm = _find(rows, kind="openmm", model="amber14", device=row["device"])
            if ok(mm):
                out.append(
                    {
                        "name": "mlmm_over_amber14",
                        "kind": "openmm",
                        "device": row["device"],
                        "dtype": row["dtype"],
                        "atoms": row["atoms"],
                        "value": _time(row) / _time(mm),
                        "numerator": row["id"],
                        "denominator": mm["id"],
                    }
                )
    return out


def _memory(row: dict) -> float | None:
    """MiB used by the case: GPU max allocated on CUDA, else peak RSS above the post-import RSS."""
    if row.get("device") == "cuda":
        return row.get("gpu_max_allocated_mib")
    if row.get("peak_rss_mib") is not None and row.get("rss_after_imports_mib") is not None:
        return max(row["peak_rss_mib"] - row["rss_after_imports_mib"], 1.0)
    return None


def fit_exponent(ns, ys) -> float | None:
    """Slope of log(y) vs log(n) (numpy.polyfit, degree 1); None with < 2 distinct sizes."""
    import numpy as np

    pts = [(n, y) for n, y in zip(ns, ys, strict=True) if n and y and y > 0]
    if len({n for n, _ in pts}) < 2:
        return None
    slope, _ = np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)
    return float(slope)


def exponents(rows: list[dict], min_atoms: int = 0) -> list[dict]:
    """Per series (all but the size), the log-log exponents of time and memory vs atoms."""
    series: dict[str, list[dict]] = {}
    for row in rows:
        if ok(row) and _time(row) and row.get("n_atoms", 0) >= min_atoms:
            series.setdefault(series_name(row), []).append(row)
    out = []
    for name, members in series.items():
        members.sort(key=lambda r: r["n_atoms"])
        ns = [r["n_atoms"] for r in members]
        times = [_time(r) for r in members]
        mem = [_memory(r) for r in members]
        out.append(
            {
                "series": name,
                "n_atoms": ns,
                "times": times,
                "time_unit": "s" if members[0]["kind"] == "model" else "ms/step",
                "memory_mib": mem,
                "memory_kind": "gpu_max_allocated"
                if members[0]["device"] == "cuda"
                else "peak_rss_above_imports",
                "time_exponent": fit_exponent(ns, times),
                "memory_exponent": fit_exponent(ns, [m or 0 for m in mem]),
                "min_atoms": min_atoms,
            }
        )
    return out


def metrics(rows: list[dict]) -> dict[str, dict]:
    """The measured values the targets refer to, each ``{"value", "status", "rows"}``.

    ``gpu.mlmm.<region>.<preset>.ms_per_step``: the fastest single-precision E2Former-LSR
    OpenMM case on CUDA for that ML region and model size, any backend;
    ``gpu.ml_all.8867.runs``: the whole box as ML region ran (True/False; ``..._recompute``:
    with ``recompute``);
    ``gpu.scaling.{time,memory}_exponent``: exponents of the small LSR float32 model-level
    series on CUDA fitted over the periodic boxes (>= 8867 atoms), only when the largest has
    >= 20,000 atoms; ``cpu.<N>.<ratio>``: the model-level ratio at N atoms, float32;
    ``cpu.<N>.<preset>.peak_rss_gib``: peak RSS of the float32 LSR model-level case
    (``..._recompute``: the same with ``recompute``; ``..._release``: with freed host memory
    released; ``..._recompute_release``: both; ``..._compile[_recompute]``: ``torch.compile``).
    """
    out: dict[str, dict] = {}

    def put(key, value, status, ids):
        out[key] = {"value": value, "status": status, "rows": ids}

    for region in ("protein", "first100"):
        for preset in ("small", "paper"):
            cands = [
                r
                for r in rows
                if r["kind"] == "openmm"
                and r["device"] == "cuda"
                and r["region"] == region
                and r["model"] == "e2former-lsr"
                and r["preset"] == preset
                and r["dtype"] == "float32"
            ]
            good = [r for r in cands if ok(r) and r.get("ms_per_step")]
            key = f"gpu.mlmm.{region}.{preset}.ms_per_step"
            if good:
                best = min(good, key=lambda r: r["ms_per_step"])
                put(key, best["ms_per_step"], "ok", [best["id"]])
            elif cands:
                put(key, None, cands[0]["status"], [r["id"] for r in cands])
    whole = [
        r
        for r in rows
        if r["kind"] == "openmm"
        and r["device"] == "cuda"
        and r["region"] == "all"
        and r["atoms"] == 8867
        and r["model"] == "e2former-lsr"
    ]
    for recompute, suffix in ((False, ""), (True, "_recompute")):
        these = [r for r in whole if bool(r.get("recompute")) == recompute]
        if these:
            ran = any(ok(r) for r in these)
            status = "ok" if ran else these[0]["status"]
            put(f"gpu.ml_all.8867.runs{suffix}", ran, status, [r["id"] for r in these])
    big = [
        e
        for e in exponents([r for r in rows if r.get("periodic") or r["kind"] != "model"], min_atoms=8867)
        if e["series"] == "model/e2former-lsr-small/float32/cuda"
    ]
    if big:
        e = big[0]
        enough = max(e["n_atoms"]) >= 20000 and len(e["n_atoms"]) >= 2
        status = "ok" if enough else f"not measured: largest box {max(e['n_atoms'])} atoms"
        put("gpu.scaling.time_exponent", e["time_exponent"] if enough else None, status, e["n_atoms"])
        put("gpu.scaling.memory_exponent", e["memory_exponent"] if enough else None, status, e["n_atoms"])
    for r in ratios(rows):
        if r["kind"] == "model" and r["device"] == "cpu" and r["dtype"] == "float32":
            put(f"cpu.{r['atoms']}.{r['name']}", r["value"], "ok", [r["numerator"], r["denominator"]])
    for preset in ("small", "paper"):
        for n in (582, 2000):
            variants = (
                (False, False, False, ""),
                (True, False, False, "_recompute"),
                (False, True, False, "_release"),
                (True, True, False, "_recompute_release"),
                (False, False, True, "_compile"),
                (True, False, True, "_compile_recompute"),
            )
            for recompute, release, compiled, suffix in variants:
                row = _find(
                    rows,
                    kind="model",
                    model="e2former-lsr",
                    preset=preset,
                    dtype="float32",
                    device="cpu",
                    atoms=n,
                    compile=compiled,
                    recompute=recompute,
                    release_memory=release,
                )
                if row is None:
                    continue
                ran = bool(row.get("times_s"))
                value = row["peak_rss_mib"] / 1024 if ran and row.get("peak_rss_mib") else None
                key = f"cpu.{n}.{preset}.peak_rss_gib{suffix}"
                put(key, value, row["status"] if not ran else "ok", [row["id"]])
    return out


def targets(rows: list[dict]) -> list[dict]:
    """target, measured, met? for every entry of :data:`TARGETS` (met is None: not measured)."""
    measured = metrics(rows)
    out = []
    for t in TARGETS:
        m = measured.get(t.metric)
        value = None if m is None else m["value"]
        if value is None:
            status = "not run" if m is None else m["status"]
            failed = m is not None and not status.startswith(("skipped", "not measured", "not run"))
            met = False if failed else None
        else:
            status = "ok"
            met = bool(value == t.limit) if t.op == "==" else bool(value <= t.limit)
        out.append(
            {
                "target": t.name,
                "metric": t.metric,
                "limit": f"{t.op} {t.limit} {t.unit}".strip(),
                "measured": value,
                "status": status,
                "met": met,
                "rows": None if m is None else m["rows"],
            }
        )
    return out


# --------------------------------------------------------------------------- #
# Environment, output
# --------------------------------------------------------------------------- #


def machine() -> dict:
    info = {"hostname": platform.node(), "platform": platform.platform(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            info["memory_gib"] = int(handle.readline().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    try:
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout.strip()
        info["gpu"] = gpu or None
    except (OSError, subprocess.SubprocessError):
        info["gpu"] = None
    return info


def versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    dists = {
        "torch": ["torch"],
        "openmm": ["openmm"],
        "openmmtorch": ["openmmtorch", "acellera-openmmtorch-cu13", "acellera-openmmtorch", "openmm-torch"],
        "openmmml": ["openmmml", "openmm-ml"],
        "openmmml_e2former": ["openmmml-e2former"],
        "mace": ["mace-torch"],
        "e3nn": ["e3nn"],
        "vesin_torch": ["vesin-torch"],
        "numpy": ["numpy"],
    }
    for key, names in dists.items():
        out[key] = None
        for name in names:
            try:
                out[key] = metadata.version(name)
                if key == "openmmtorch":
                    out["openmmtorch_distribution"] = name
                break
            except metadata.PackageNotFoundError:
                continue
    try:
        out["git_commit"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                check=False,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


def _json_default(value):
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.3g}"
    return str(value)


def print_table(rows: list[list], headers: list[str]) -> None:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def report(result: dict) -> None:
    print()
    print("cases")
    print_table(
        [
            [
                r["id"],
                r.get("ml_atoms") if r["kind"] == "openmm" else r.get("n_atoms"),
                _time(r) if ok(r) else None,
                r.get("ns_per_day"),
                r.get("peak_rss_mib"),
                r.get("gpu_max_allocated_mib"),
                r["status"][:70],
            ]
            for r in result["rows"]
        ],
        ["case", "ML atoms", "median (s | ms/step)", "ns/day", "peak RSS MiB", "GPU MiB", "status"],
    )
    if result["ratios"]:
        print()
        print("ratios (same run)")
        print_table(
            [[r["name"], r["device"], r["dtype"], r["atoms"], r["value"]] for r in result["ratios"]],
            ["ratio", "device", "dtype", "atoms", "value"],
        )
    fitted = [e for e in result["exponents"] if e["time_exponent"] is not None]
    if fitted:
        print()
        print("log-log exponents vs atoms")
        print_table(
            [
                [
                    e["series"],
                    f"{min(e['n_atoms'])}-{max(e['n_atoms'])}",
                    e["time_exponent"],
                    e["memory_exponent"],
                ]
                for e in fitted
            ],
            ["series", "atoms", "time", "memory"],
        )
    print()
    print("targets (reported, not asserted)")
    print_table(
        [
            [
                t["target"],
                t["limit"],
                t["measured"] if t["measured"] is not None else t["status"][:50],
                {True: "yes", False: "NO", None: "not measured"}[t["met"]],
            ]
            for t in result["targets"]
        ],
        ["target", "limit", "measured", "met?"],
    )


def plot(result: dict, path: Path) -> Path | None:
    """Two log-log panels: time vs atoms and memory vs atoms, one line per model-level series."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for e in result["exponents"]:
        if not e["series"].startswith("model/"):
            continue
        label = e["series"].removeprefix("model/")
        tx = "" if e["time_exponent"] is None else f" (N^{e['time_exponent']:.2f})"
        axes[0].loglog(e["n_atoms"], e["times"], "o-", label=label + tx)
        mem = [(n, m) for n, m in zip(e["n_atoms"], e["memory_mib"], strict=True) if m]
        if mem:
            mx = "" if e["memory_exponent"] is None else f" (N^{e['memory_exponent']:.2f})"
            axes[1].loglog(*zip(*mem, strict=True), "o-", label=label + mx)
    axes[0].set_ylabel("energy + forces time (s)")
    axes[0].set_title("model energy + forces, median")
    axes[1].set_ylabel("memory (MiB)")
    axes[1].set_title("GPU: max allocated; CPU: peak RSS above the RSS after imports", fontsize=9)
    for ax in axes:
        ax.set_xlabel("atoms")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"e2former bench speed, {result['device']}, {result['threads']} threads, {result['date']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke version: 100 and 582 atoms, small LSR + local float32, TorchForce on "
        "the CPU platform with a few steps, one MACE case if installed (~2 min)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch and OpenMM CPU threads (default 2)")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help="size labels to run (100 582 2000 8867 17734 35468)",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        default=None,
        help="keep only cases whose id contains or fnmatch-es one of these, e.g. 'openmm/*'",
    )
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile cases")
    parser.add_argument("--list", action="store_true", help="print the planned case ids and stop")
    parser.add_argument(
        "--out", default=None, help="JSON path (default e2former_bench_speed_<device>[_quick].json)"
    )
    parser.add_argument("--plot", default=None, help="PNG path (default: the JSON path with .png)")
    parser.add_argument(
        "--timeout-per-case",
        type=float,
        default=None,
        help="seconds before a case is killed (default 900; 300 with --quick)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="stop starting new cases once this much wall-clock time is spent",
    )
    parser.add_argument(
        "--mem-gib",
        type=float,
        default=16.0,
        help="CPU cases: address-space cap above the worker's start size, GiB (0: none)",
    )
    parser.add_argument("--log-dir", type=Path, default=None, help="keep every case's output here")


def main_from_args(args) -> int:
    if args.timeout_per_case is None:
        args.timeout_per_case = 300.0 if args.quick else 900.0
    cases = select(plan(args.device, args.quick, args.sizes, compile_cases=not args.no_compile), args.cases)
    if args.list:
        for case in cases:
            print(case_id(case))
        return 0
    if not cases:
        raise ValueError("no case matches the --sizes/--cases selection (try --list)")
    default = f"e2former_bench_speed_{args.device}{'_quick' if args.quick else ''}.json"
    out = Path(args.out or default)
    png = Path(args.plot) if args.plot else out.with_suffix(".png")
    load_start = list(os.getloadavg())
    started = datetime.datetime.now().isoformat(timespec="seconds")
    t0 = time.monotonic()
    print(f"e2former bench speed: {len(cases)} cases on {args.device}, {args.threads} threads", flush=True)
    rows = run_all(cases, args)
    result = {
        "benchmark": "e2former bench speed",
        "date": started,
        "device": args.device,
        "quick": args.quick,
        "threads": args.threads,
        "argv": sys.argv,
        "machine": machine(),
        "versions": versions(),
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()),
        "wall_s": time.monotonic() - t0,
        "budget_s": args.budget_s,
        "timeout_per_case_s": args.timeout_per_case,
        "retain_freed_memory": os.environ.get("E2FORMER_RETAIN_FREED_MEMORY", "1"),
        "mace_off23": {
            "sizes": MACE_OFF23,
            "common": MACE_OFF23_COMMON,
            "elements": MACE_OFF23_ELEMENTS,
            "source": MACE_OFF23_SOURCE,
        },
        "rows": rows,
    }
    result["ratios"] = ratios(rows)
    result["exponents"] = exponents(rows)
    result["metrics"] = metrics(rows)
    result["targets"] = targets(rows)
    if result["machine"].get("gpu") is None:
        result["machine"]["gpu"] = next((r["gpu"] for r in rows if r.get("gpu")), None)
    report(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    print(f"\nwrote {out}")
    written = plot(result, png)
    if written:
        print(f"wrote {written}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m openmmml_e2former.bench.speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result-file", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        run_worker(json.loads(args.worker), args.result_file, args.threads, args.mem_gib)
        return 0  # the status is in the result file
    return main_from_args(args)


if __name__ == "__main__":
    sys.exit(main())

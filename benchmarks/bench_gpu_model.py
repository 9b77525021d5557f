"""Energy + forces time of the small model on a CUDA device vs the CPU, same run, same systems.

The systems and random networks of ``bench_model_speed.py`` (villin: 100 atoms, the 582-atom
protein, the protein + nearest waters as a 2000-atom cluster, the whole periodic 8867-atom box),
LSR (``fragment_selection='all'``) and local-only, float32. On the GPU: median of ``--repeats``
calls after ``--warmup`` (each call ends with the energy copied to the host, so the GPU work is
finished), peak memory from ``torch.cuda.max_memory_allocated``. On the CPU (``--cpu-threads``
torch threads): 100 and 582 atoms only, for the ratio. Prints a table, writes
``benchmarks/results/gpu_model_speed.json``. Needs a CUDA device (it says so and stops otherwise).

    python benchmarks/bench_gpu_model.py [--sizes 100,582,2000,8867] [--repeats 10]
"""

from __future__ import annotations

import argparse
import time

import torch
import villin_common as vc
from bench_model_speed import system_for_size

VARIANTS = ("lsr", "local")


def time_calls(model, inputs, warmup: int, repeats: int) -> tuple[float, float]:
    """(median seconds per energy + forces call, energy in eV)."""
    for _ in range(warmup):
        energy, _ = vc.energy_and_forces(model, *inputs)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        energy, _ = vc.energy_and_forces(model, *inputs)  # float(energy) waits for the device
        times.append(time.perf_counter() - t0)
    return vc.median(times), energy


def on_device(inputs, device: str) -> tuple:
    return tuple(None if x is None else x.to(device) for x in inputs)


def measure(size: int, variant: str, args) -> dict:
    top, positions, atoms, box = system_for_size(size)
    inputs = vc.model_inputs(top, positions, atoms, box)
    model = vc.build_model(variant)
    row = {"n_atoms": len(atoms), "variant": variant}
    torch.cuda.reset_peak_memory_stats()
    try:
        gpu_s, energy = time_calls(model.cuda(), on_device(inputs, "cuda"), args.warmup, args.repeats)
        row.update(gpu_s=gpu_s, gpu_energy_eV=energy, gpu_peak_gib=torch.cuda.max_memory_allocated() / 2**30)
    except torch.OutOfMemoryError:
        row.update(gpu_s=None, gpu_status="out of memory")
    torch.cuda.empty_cache()
    if size <= args.cpu_max_atoms:
        cpu_s, energy = time_calls(model.cpu(), inputs, 1, args.cpu_repeats)
        row.update(cpu_s=cpu_s, cpu_energy_eV=energy)
        if row.get("gpu_s"):
            row["cpu_over_gpu"] = cpu_s / row["gpu_s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,582,2000,8867")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--cpu-repeats", type=int, default=3)
    parser.add_argument("--cpu-max-atoms", type=int, default=582)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu_model.py needs a CUDA device; PyTorch sees none here")
    torch.set_num_threads(args.cpu_threads)
    rows = [measure(int(n), v, args) for n in args.sizes.split(",") for v in VARIANTS]
    vc.print_table(
        [[r["n_atoms"], r["variant"], r.get("gpu_s") or r.get("gpu_status"), r.get("gpu_peak_gib"),
          r.get("cpu_s"), r.get("cpu_over_gpu")] for r in rows],
        ["atoms", "model", "GPU s/call", "GPU peak GiB", f"CPU s/call ({args.cpu_threads} thr)", "CPU/GPU"],
    )  # fmt: skip
    environment = vc.environment()
    environment["gpu"] = torch.cuda.get_device_name(0)
    path = vc.write_json(
        "gpu_model_speed.json", {"rows": rows, "settings": vars(args), "environment": environment}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

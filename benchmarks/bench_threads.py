"""Thread count vs CPU contention: energy+forces time of the small float32 local-only
model on the villin protein (582 atoms) with 1 or 2 torch threads, with and without
``OMP_WAIT_POLICY=PASSIVE``, while 0, 1 or 2 busy-loop processes compete for the CPUs.

Why: on a shared 2-core machine ``torch.set_num_threads(2)`` was seen to be up to 20x
slower than one thread (OpenMP worker threads spin while waiting for a core that another
process holds).  This script reproduces that under controlled load.  Each configuration
runs in a fresh subprocess (the OpenMP wait policy is read at start-up); the busy loops
are started and stopped by this script.

    python benchmarks/bench_threads.py            # loads 0, 1, 2; 3 repeats
    python benchmarks/bench_threads.py --quick    # loads 0, 2; 2 repeats
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import villin_common as vc

CONFIGS = [("1 thread", 1, False), ("2 threads", 2, False), ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, True)]


def worker(threads: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    pdb = vc.villin_pdb()
    top = pdb.topology
    atoms = vc.protein_atoms(top)
    inputs = vc.model_inputs(top, vc.positions_angstrom(pdb), atoms)
    model = vc.build_model("local")
    vc.energy_and_forces(model, *inputs)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        vc.energy_and_forces(model, *inputs)
        times.append(time.perf_counter() - t0)
    return {
        "times_s": times,
        "median_s": vc.median(times),
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 3)
    if args.worker:
        print(json.dumps(worker(args.worker, repeats)))
        return
    loads = [0, 2] if args.quick else [0, 1, 2]
    results = {
        "benchmark": "bench_threads",
        "quick": args.quick,
        "n_atoms": 582,
        "variant": "local",
        "repeats": repeats,
        "runs": [],
    }
    for load in loads:
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(load)]
        try:
            time.sleep(1.0)
            for name, threads, passive in CONFIGS:
                env = dict(os.environ)
                env.pop("OMP_WAIT_POLICY", None)
                if passive:
                    env["OMP_WAIT_POLICY"] = "PASSIVE"
                print(f"{load} busy process(es): {name} ...", flush=True)
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", str(threads), "--repeats", str(repeats)],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=vc.HERE,
                    timeout=900,
                )
                line = [x for x in proc.stdout.splitlines() if x.startswith("{")]
                run = json.loads(line[-1]) if line else {"error": proc.stderr[-500:]}
                run.update({"busy_processes": load, "config": name})
                results["runs"].append(run)
        finally:
            for p in busy:
                p.kill()
                p.wait()
    rows = []
    for load in loads:
        row = [load]
        for name, _, _ in CONFIGS:
            r = next(x for x in results["runs"] if x["busy_processes"] == load and x["config"] == name)
            row.append(r.get("median_s"))
        rows.append(row)
    print("\nlocal-only small float32 model, villin protein (582 atoms), energy+forces, median s")
    vc.print_table(rows, ["busy procs"] + [c[0] for c in CONFIGS])
    path = vc.write_json("threads_quick.json" if args.quick else "threads.json", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Energy + forces time and peak memory of the small float32 E2Former on the CPU.

Variants (all ``torch.manual_seed(0); E2FormerLSR(small_config(...)).eval()``):

  lsr    small_config()                           (fragment_selection='all', the default)
  local  small_config(num_long_layers=0)          (local-only E2Former)
  topk   small_config(fragment_selection='topk')  (the authors' K=64 fragment cut)

Sizes, all from villin (OpenMM's app/data/test.pdb, 8867 atoms, box 4.92 x 4.60 x 3.89 nm):

  100   first 100 protein atoms (cuts residues; timing only), non-periodic
  582   the protein, non-periodic
  2000  protein + nearest whole waters/ions up to 2000 atoms, non-periodic cluster
  8867  the whole system, periodic box

Each size runs in its own subprocess (so ``resource.getrusage`` peak RSS is per size; the
whole-system size runs one subprocess per variant, with its address space capped so an
oversized allocation raises instead of invoking the OOM killer).  Inside a subprocess the
variants get one warm-up call each (peak RSS of that call recorded after resetting the
kernel's high-water mark) and then the timed repeats are interleaved across variants, so
the ratios see the same machine load.  A call that runs past ``--call-limit`` seconds is
abandoned and recorded as such.

    python benchmarks/bench_model_speed.py            # ~10-15 min on 2 busy cores
    python benchmarks/bench_model_speed.py --quick    # N = 100, 582; ~1-2 min
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import time
import traceback

import numpy as np
import torch
import villin_common as vc

VARIANTS = ["lsr", "local", "topk"]
SIZES = [100, 582, 2000, 8867]
# (warm-up calls, timed repeats) per size in the full run; the biggest size is one cold call.
SCHEDULE = {100: (1, 5), 582: (1, 3), 2000: (1, 2), 8867: (0, 1)}
QUICK_SCHEDULE = {100: (1, 2), 582: (1, 2)}


class CallTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CallTimeout()


def system_for_size(n: int):
    """(topology, positions [n_total,3] Angstrom, ML atom indices, box or None)."""
    pdb = vc.villin_pdb()
    top = pdb.topology
    pos = vc.positions_angstrom(pdb)
    box = vc.box_angstrom(top)
    protein = vc.protein_atoms(top)
    if n == 100:
        return top, pos, protein[:100], None
    if n == len(protein):
        return top, pos, protein, None
    if n == top.getNumAtoms():
        return top, pos, list(range(n)), box
    atoms, unwrapped = vc.protein_plus_nearest(top, pos, box, n_atoms=n)
    return top, unwrapped, atoms, None


def graph_sizes(model_inputs) -> dict:
    """Edge counts of the local graph and of the two fragment graphs."""
    from openmmml_e2former.model.graph import fragment_centroids, fragment_graph, radius_graph

    pos, z, fid, _, box = model_inputs
    with torch.no_grad():
        local = int(radius_graph(pos, 5.0, box)[0].shape[0])
        f = int(fid.max()) + 1
        centres = fragment_centroids(pos, fid, f, box)
        pairs = 0
        for start in range(0, pos.shape[0], 2000):  # chunks keep the N x F matrix small
            sub = fragment_graph(pos[start : start + 2000], centres, fid[start : start + 2000], 18.0, box)
            pairs += int(sub[0].shape[0])
    return {
        "local_edges": local,
        "fragments": f,
        "all_fragment_pairs": pairs,
        "topk_fragment_slots": pos.shape[0] * min(f, 64),
    }


def worker(args) -> dict:
    torch.set_num_threads(args.threads)
    if args.mem_gib > 0:
        vc.limit_memory(args.mem_gib)
    n = args.size
    top, positions, atoms, box = system_for_size(n)
    inputs = vc.model_inputs(top, positions, atoms, box)
    result = {
        "n_atoms": len(atoms),
        "periodic": box is not None,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "repeats": args.repeats,
        "memory_cap_gib": args.mem_gib,
    }
    result.update(graph_sizes(inputs))
    variants = args.variants.split(",")
    models = {v: vc.build_model(v) for v in variants}
    out = {v: {"times_s": [], "status": "ok"} for v in variants}
    signal.signal(signal.SIGALRM, _alarm)

    def timed(v):
        signal.alarm(int(math.ceil(args.call_limit)))
        t0 = time.perf_counter()
        try:
            energy, forces = vc.energy_and_forces(models[v], *inputs)
            if not math.isfinite(energy):
                raise RuntimeError(f"non-finite energy {energy}")
        finally:
            signal.alarm(0)
        out[v]["energy_eV"] = energy
        return time.perf_counter() - t0

    def guarded(v, record: bool) -> None:
        if out[v]["status"] != "ok":
            return
        try:
            dt = timed(v)
            if record:
                out[v]["times_s"].append(dt)
            else:
                out[v].setdefault("warmup_times_s", []).append(dt)
        except CallTimeout:
            out[v]["status"] = f"abandoned: one energy+forces call ran longer than {args.call_limit:.0f} s"
        except (RuntimeError, MemoryError) as error:  # allocation failure under the address-space cap
            message = str(error).strip().splitlines()[0][:300]
            kind = (
                "out of memory" if ("alloc" in message.lower() or isinstance(error, MemoryError)) else "error"
            )
            out[v]["status"] = f"{kind}: {type(error).__name__}: {message}"
            out[v]["traceback_tail"] = traceback.format_exc().strip().splitlines()[-4:]

    for v in variants:
        vc.reset_peak_rss()
        out[v]["rss_before_mb"] = vc.current_rss_mb()
        for _ in range(args.warmup):
            guarded(v, record=False)
        if args.warmup == 0:  # the cold call is the timed one: its peak is the variant's peak
            guarded(v, record=True)
        out[v]["peak_rss_mb"] = vc.peak_rss_mb()
    for r in range(args.repeats - (1 if args.warmup == 0 else 0)):
        for v in variants if r % 2 == 0 else variants[::-1]:
            guarded(v, record=True)
    for v in variants:
        out[v]["median_s"] = vc.median(out[v]["times_s"])
        if out[v]["status"] != "ok" and not out[v]["times_s"]:
            out[v]["energy_only"] = energy_only_fallback(models[v], inputs, v, result, args)
    result["variants"] = out
    if args.compare_threads and "local" in models:
        # same-run check of the thread count: the local variant, 1 thread vs --threads, interleaved
        times = {1: [], args.threads: []}
        for _ in range(3):
            for nt in times:
                torch.set_num_threads(nt)
                t0 = time.perf_counter()
                vc.energy_and_forces(models["local"], *inputs)
                times[nt].append(time.perf_counter() - t0)
        torch.set_num_threads(args.threads)
        result["thread_comparison_local"] = {
            str(k): {"times_s": v, "median_s": vc.median(v)} for k, v in times.items()
        }
    result["process_peak_rss_mb"] = vc.peak_rss_mb()
    return result


def energy_only_fallback(model, inputs, variant: str, sizes: dict, args) -> dict:
    """One energy-only call under ``torch.no_grad`` (no autograd graph kept), for a variant
    whose energy+forces call failed; skipped when its largest single tensor, the per-edge
    tensor-product output [edges, 20, C] float32, alone exceeds the memory cap."""
    import gc

    gc.collect()
    edges = (
        sizes["local_edges"]
        + {"lsr": sizes["all_fragment_pairs"], "topk": sizes["topk_fragment_slots"], "local": 0}[variant]
    )
    largest = max(sizes["local_edges"], edges - sizes["local_edges"]) * 20 * 32 * 4
    if args.mem_gib > 0 and largest > args.mem_gib * 2**30:
        return {
            "status": f"skipped: one [edges, 20, 32] float32 tensor alone would take {largest / 2**30:.1f} GiB"
        }
    vc.reset_peak_rss()
    signal.alarm(int(math.ceil(args.call_limit)))
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            energy = float(model(*inputs, None))
        return {
            "status": "ok",
            "seconds": time.perf_counter() - t0,
            "energy_eV": energy,
            "peak_rss_mb": vc.peak_rss_mb(),
        }
    except CallTimeout:
        return {"status": f"abandoned after {args.call_limit:.0f} s"}
    except (RuntimeError, MemoryError) as error:
        return {"status": f"failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"}
    finally:
        signal.alarm(0)


def memory_model(runs) -> dict:
    """Peak RSS ~ a + b * local_edges (local variant) and + c * fragment edges (lsr/topk),
    fitted on the sizes that ran; predicts the peak of the runs that did not."""
    runs = [r for r in runs if "local_edges" in r]
    pts = [
        (r["local_edges"], r["variants"]["local"]["peak_rss_mb"])
        for r in runs
        if r.get("variants", {}).get("local", {}).get("median_s")
    ]
    if len(pts) < 2:
        return {}
    b, a = np.polyfit(*zip(*pts, strict=False), 1)
    model = {"local": {"base_mb": float(a), "kib_per_local_edge": float(b * 1024)}}
    for v, key in [("lsr", "all_fragment_pairs"), ("topk", "topk_fragment_slots")]:
        per = [
            (r["variants"][v]["peak_rss_mb"] - (a + b * r["local_edges"])) / r[key]
            for r in runs
            if r.get("variants", {}).get(v, {}).get("median_s") and r[key] > 10000
        ]
        if per:
            c = per[-1]  # the largest size that ran
            model[v] = {
                "kib_per_fragment_edge": float(c * 1024),
                "predicted_peak_mb": {
                    str(r["n_atoms"]): float(a + b * r["local_edges"] + c * r[key]) for r in runs
                },
            }
    model["local"]["predicted_peak_mb"] = {str(r["n_atoms"]): float(a + b * r["local_edges"]) for r in runs}
    return model


def run_worker(size: int, variants: list[str], warmup: int, repeats: int, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--size",
        str(size),
        "--variants",
        ",".join(variants),
        "--warmup",
        str(warmup),
        "--repeats",
        str(repeats),
        "--threads",
        str(args.threads),
        "--call-limit",
        str(args.call_limit),
        "--mem-gib",
        str(args.mem_gib),
    ]
    if size == 582 and args.threads != 1:
        cmd.append("--compare-threads")
    budget = 120 + args.call_limit * (warmup + repeats) * len(variants)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget, cwd=vc.HERE)
    except subprocess.TimeoutExpired:
        return {"n_atoms": size, "error": f"worker exceeded {budget:.0f} s", "variants": {}}
    wall = time.perf_counter() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        status = f"killed (signal {-proc.returncode})" if proc.returncode < 0 else f"exit {proc.returncode}"
        return {
            "n_atoms": size,
            "error": f"worker {status}",
            "stderr_tail": tail,
            "variants": {v: {"status": f"worker {status}"} for v in variants},
        }
    data = json.loads(lines[-1])
    data["worker_wall_s"] = wall
    return data


def fit_exponent(ns, ts):
    if len(ns) < 2:
        return None
    slope, _ = np.polyfit(np.log(ns), np.log(ts), 1)
    return float(slope)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N = 100 and 582 only, 2 repeats")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument(
        "--call-limit",
        type=float,
        default=300.0,
        help="abandon a variant whose single call exceeds this many seconds (default 300)",
    )
    parser.add_argument(
        "--mem-gib",
        type=float,
        default=16.0,
        help="address-space cap per worker above its start size, GiB (default 16)",
    )
    parser.add_argument("--output", default=None, help="JSON file name under benchmarks/results/")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--compare-threads", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    schedule = QUICK_SCHEDULE if args.quick else SCHEDULE
    t_start = time.perf_counter()
    runs = []
    for size, (warmup, repeats) in schedule.items():
        if size == 8867:
            # one worker per variant: the 'all' LSR model may exhaust memory at this size
            merged = None
            for v in ["local", "topk", "lsr"]:
                print(f"N={size} {v}: running ...", flush=True)
                part = run_worker(size, [v], warmup, repeats, args)
                wall = part.get("worker_wall_s")
                if merged is None:
                    merged = part
                    merged["worker_wall_s"] = {}
                else:
                    merged.setdefault("variants", {}).update(part.get("variants", {}))
                    merged["process_peak_rss_mb_" + v] = part.get("process_peak_rss_mb")
                merged["worker_wall_s"][v] = wall
                if "error" in part:
                    merged.setdefault("errors", {})[v] = part["error"]
            merged["process_peak_rss_mb_local"] = merged.pop("process_peak_rss_mb", None)
            runs.append(merged)
        else:
            print(f"N={size}: running {','.join(VARIANTS)} ...", flush=True)
            runs.append(run_worker(size, VARIANTS, warmup, repeats, args))

    rows = []
    for run in runs:
        var = run.get("variants", {})
        med = {v: var.get(v, {}).get("median_s") for v in VARIANTS}
        rows.append(
            [
                run.get("n_atoms"),
                "yes" if run.get("periodic") else "no",
                run.get("local_edges"),
                run.get("all_fragment_pairs"),
                med["local"],
                med["lsr"],
                med["topk"],
                (med["lsr"] / med["local"]) if med["lsr"] and med["local"] else None,
                (med["lsr"] / med["topk"]) if med["lsr"] and med["topk"] else None,
                var.get("local", {}).get("peak_rss_mb"),
                var.get("lsr", {}).get("peak_rss_mb"),
                var.get("topk", {}).get("peak_rss_mb"),
            ]
        )
    exponents = {}
    for v in VARIANTS:
        pts = [
            (r["n_atoms"], r["variants"][v]["median_s"])
            for r in runs
            if r.get("variants", {}).get(v, {}).get("median_s")
        ]
        exponents[v] = {
            "exponent": fit_exponent(*zip(*pts, strict=False)) if len(pts) >= 2 else None,
            "sizes": [p[0] for p in pts],
        }
    mem = memory_model(runs)
    total = time.perf_counter() - t_start
    print()
    print(f"energy+forces, small float32 model, CPU, torch threads={args.threads} (median seconds)")
    vc.print_table(
        rows,
        [
            "N",
            "pbc",
            "local_edges",
            "frag_pairs",
            "local_s",
            "lsr_s",
            "topk_s",
            "lsr/local",
            "lsr/topk",
            "local_MB",
            "lsr_MB",
            "topk_MB",
        ],
    )
    for run in runs:
        for v, d in run.get("variants", {}).items():
            if d.get("status", "ok") != "ok":
                print(f"N={run['n_atoms']} {v}: {d['status']}")
                if "energy_only" in d:
                    e = d["energy_only"]
                    extra = (
                        f"{e['seconds']:.1f} s, peak {e['peak_rss_mb']:.0f} MiB"
                        if e["status"] == "ok"
                        else e["status"]
                    )
                    print(f"    energy only (no_grad): {extra}")
    print(
        "log-log exponent of time vs N: "
        + ", ".join(
            f"{v} {e['exponent']:.2f} (N={e['sizes']})" if e["exponent"] is not None else f"{v} n/a"
            for v, e in exponents.items()
        )
    )
    for run in runs:
        tc = run.get("thread_comparison_local")
        if tc:
            print(
                f"threads, local variant N={run['n_atoms']} (same run, interleaved): "
                + ", ".join(f"{k} thread(s) {d['median_s']:.3f} s" for k, d in tc.items())
            )
    for v, m in mem.items():
        pred = m.get("predicted_peak_mb", {})
        rate = m.get("kib_per_local_edge") or m.get("kib_per_fragment_edge")
        print(
            f"memory model {v}: {rate:.1f} KiB per edge; predicted peak "
            + ", ".join(f"N={k}: {val / 1024:.1f} GiB" for k, val in pred.items())
        )
    print(f"total wall time {total:.0f} s")
    name = args.output or ("model_speed_quick.json" if args.quick else "model_speed.json")
    path = vc.write_json(
        name,
        {
            "benchmark": "bench_model_speed",
            "quick": args.quick,
            "threads": args.threads,
            "schedule": {str(k): {"warmup": w, "repeats": r} for k, (w, r) in schedule.items()},
            "call_limit_s": args.call_limit,
            "runs": runs,
            "exponents": exponents,
            "memory_model": mem,
            "total_wall_s": total,
        },
    )
    print(f"wrote {path}")
    if vc.have_matplotlib() and len(runs) > 1:
        plot(runs, path.with_suffix(".png"))


def plot(runs, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for v, style in zip(VARIANTS, ["o-", "s-", "^-"], strict=False):
        pts = [
            (r["n_atoms"], r["variants"][v]["median_s"], r["variants"][v].get("peak_rss_mb"))
            for r in runs
            if r.get("variants", {}).get(v, {}).get("median_s")
        ]
        if pts:
            n, t, m = zip(*pts, strict=False)
            ax[0].loglog(n, t, style, label=v)
            ax[1].loglog(n, m, style, label=v)
    ax[0].set_xlabel("atoms")
    ax[0].set_ylabel("energy+forces time (s)")
    ax[1].set_xlabel("atoms")
    ax[1].set_ylabel("peak RSS (MiB)")
    for a in ax:
        a.legend()
        a.grid(True, which="both", alpha=0.3)
    fig.suptitle("small float32 E2Former, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

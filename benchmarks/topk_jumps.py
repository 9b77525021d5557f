"""How often, and by how much, the authors' top-K fragment cut makes the energy jump.

The authors' long-range stage keeps, for every atom, only the K = 64 fragment centres
nearest to it (within 18 A): when the 64th and 65th nearest centres swap places the
energy jumps.  This script

1. runs a short classical trajectory of villin (amber14-all + amber14/tip3pfb, PME 1 nm,
   HBonds, LangevinMiddle 300 K, 2 fs, CPU platform; ``--frames`` frames 10 fs apart);
2. with ALL 8867 atoms as ML atoms (every water and ion a fragment: 2798 fragments,
   periodic box) counts, for every pair of consecutive frames, the atoms whose top-K
   fragment set changed and by how many fragments;
3. on a non-periodic sub-region (whole residues with an atom within ``--radius`` A of the
   protein centre: the 'all' model cannot run on 8867 atoms, see bench_model_speed)
   evaluates the float64 small random model with fragment_selection='topk' and 'all'
   (local_mode='smooth' for both) at ``--points`` points on the straight line between two
   consecutive frames, and counts the top-K set changes between neighbouring points;
4. measures individual jumps exactly: a random sample of set-change events is isolated by
   bisection (on the cheap set computation) to a bracket of width ``--tol`` in the path
   parameter that contains exactly one change, and the energy is evaluated at both ends;
   the same is done for the authors' local graph (local_mode='reference',
   fragment_selection='all'): a neighbour crossing the 5 A cutoff (the edge-degree
   embedding has no envelope there) and a change of which out-of-cutoff atoms fill the
   padded slots (their scores enter the softmax maximum) -- the "local-cutoff-crossing
   scale" the top-K steps are compared with.  Control: the smooth model ('smooth', 'all')
   across the same brackets.

    python benchmarks/topk_jumps.py            # ~8-10 min on 2 busy cores
    python benchmarks/topk_jumps.py --quick    # small region, 10 points, 3 events each
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import villin_common as vc

K_FRAGMENTS = 64
LONG_CUTOFF = 18.0
LOCAL_CUTOFF = 5.0
MAX_NEIGHBORS = 640


# --------------------------------------------------------------------------- #
# Classical trajectory
# --------------------------------------------------------------------------- #


def classical_frames(topology, positions, n_frames: int, stride: int, threads: int, seed: int) -> np.ndarray:
    """Frames [T, N, 3] in Angstrom, unwrapped (molecules move continuously)."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
    system = forcefield.createSystem(
        topology, nonbondedMethod=app.PME, nonbondedCutoff=1.0 * unit.nanometer, constraints=app.HBonds
    )
    integrator = openmm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 1 / unit.picosecond, 2.0 * unit.femtoseconds
    )
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(
        system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": str(threads)}
    )
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    frames = []
    for k in range(n_frames):
        if k:
            integrator.step(stride)
        state = context.getState(getPositions=True)
        frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
    return np.array(frames)


# --------------------------------------------------------------------------- #
# Graph states
# --------------------------------------------------------------------------- #


@torch.no_grad()
def topk_state(pos: torch.Tensor, fid: torch.Tensor, num_fragments: int, box) -> torch.Tensor:
    """Sorted top-K fragment set of every atom ``[N, K]``, exactly as the model's 'topk'
    graph (``slot_graph``) selects it: the K nearest centres (own fragment included; it is
    masked afterwards).  Fragments crossing the 18 A cutoff while inside the top K are not
    changes of this set (the envelope makes those smooth)."""
    from openmmml_e2former.model.graph import fragment_centroids, slot_graph

    centres = fragment_centroids(pos, fid, num_fragments, box)
    _, senders, _, _, _ = slot_graph(pos, centres, LONG_CUTOFF, K_FRAGMENTS, box, fid, False)
    return torch.sort(senders.view(pos.shape[0], -1), dim=1).values


def set_changes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row, how many members of ``a`` (>= 0) are not in ``b``: ``[N]`` long."""
    if a.shape != b.shape:
        raise ValueError("slot counts differ")
    member = (a.unsqueeze(2) == b.unsqueeze(1)).any(dim=2) | (a < 0)
    return (~member).sum(dim=1)


@torch.no_grad()
def local_state(pos: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The authors' local slot graph: (K, sorted slot members [N, K], sorted in-cutoff
    members [N, K] with -1 for masked slots)."""
    from openmmml_e2former.model.graph import slot_graph

    _, senders, _, _, inside = slot_graph(pos, pos, LOCAL_CUTOFF, MAX_NEIGHBORS, None, None, True)
    n = pos.shape[0]
    members = torch.sort(senders.view(n, -1), dim=1).values
    within = torch.sort(torch.where(inside, senders, torch.full_like(senders, -1)).view(n, -1), dim=1).values
    return members.shape[1], members, within


def local_changes(a, b) -> dict:
    """Counts of local-graph events between two states."""
    if a[0] != b[0]:  # the number of slots follows the most crowded atom: a cutoff crossing there
        return {"k_change": 1, "cutoff": 0, "slot": 0}
    cutoff = int(set_changes(a[2], b[2]).sum()) + int(set_changes(b[2], a[2]).sum())
    slot = int(set_changes(a[1], b[1]).sum())
    return {"k_change": 0, "cutoff": cutoff // 2, "slot": slot}


# --------------------------------------------------------------------------- #
# Event isolation by bisection
# --------------------------------------------------------------------------- #


def isolate(path, t0: float, t1: float, state_fn, count_fn, tol: float, rng) -> tuple[float, float] | None:
    """Bisect [t0, t1] (which must contain a change) to a bracket narrower than ``tol``
    that still contains one; at each level a half with a change is chosen at random."""
    s0, s1 = state_fn(path(t0)), state_fn(path(t1))
    if count_fn(s0, s1) == 0:
        return None
    while t1 - t0 > tol:
        tm = 0.5 * (t0 + t1)
        sm = state_fn(path(tm))
        left, right = count_fn(s0, sm) > 0, count_fn(sm, s1) > 0
        if left and right:
            go_left = bool(rng.integers(2))
        else:
            go_left = left
        if go_left:
            t1, s1 = tm, sm
        else:
            t0, s0 = tm, sm
    return t0, t1


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and OpenMM threads (default 1: faster than 2 on a shared 2-core machine)",
    )
    parser.add_argument("--frames", type=int, default=None, help="trajectory frames (default 20; quick 5)")
    parser.add_argument("--stride", type=int, default=5, help="2-fs steps between frames (default 5 = 10 fs)")
    parser.add_argument(
        "--radius", type=float, default=None, help="sub-region radius in A (default 12; quick 10)"
    )
    parser.add_argument("--points", type=int, default=None, help="points on the path (default 50; quick 10)")
    parser.add_argument(
        "--events", type=int, default=None, help="isolated events measured per kind (default 8; quick 3)"
    )
    parser.add_argument(
        "--pair", type=int, default=None, help="frame pair for the path (default: the middle one)"
    )
    parser.add_argument("--tol", type=float, default=1e-7, help="bracket width in the path parameter")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replot", metavar="JSON", help="only redraw the plot of a results file")
    args = parser.parse_args()
    if args.replot:
        import json
        from pathlib import Path

        plot(json.loads(Path(args.replot).read_text()), Path(args.replot).with_suffix(".png"))
        return
    quick = args.quick
    n_frames = args.frames or (5 if quick else 20)
    radius = args.radius or (10.0 if quick else 12.0)
    n_points = args.points or (10 if quick else 50)
    n_events = args.events or (3 if quick else 8)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    t_start = time.perf_counter()
    results = {
        "benchmark": "topk_jumps",
        "quick": quick,
        "threads": args.threads,
        "frames": n_frames,
        "frame_spacing_fs": 2.0 * args.stride,
        "radius_angstrom": radius,
        "points": n_points,
        "tol": args.tol,
        "K": K_FRAGMENTS,
        "long_cutoff_angstrom": LONG_CUTOFF,
    }

    from openmmml_e2former.fragments import fragment_ids_from_topology
    from openmmml_e2former.model.graph import fragment_centroids

    pdb = vc.villin_pdb()
    top = pdb.topology
    box = vc.box_angstrom(top)
    n_all = top.getNumAtoms()

    # 1. classical trajectory
    t0 = time.perf_counter()
    frames = classical_frames(top, pdb.positions, n_frames, args.stride, args.threads, args.seed)
    results["trajectory_s"] = time.perf_counter() - t0
    print(f"trajectory: {n_frames} frames in {results['trajectory_s']:.1f} s", flush=True)

    # 2. top-K set changes of the whole periodic system
    fid_all = torch.tensor(fragment_ids_from_topology(top), dtype=torch.long)
    f_all = int(fid_all.max()) + 1
    box_t = torch.tensor(box, dtype=torch.float64)
    t0 = time.perf_counter()
    states = [topk_state(torch.tensor(f, dtype=torch.float64), fid_all, f_all, box_t) for f in frames]
    per_pair = []
    for a, b in zip(states[:-1], states[1:], strict=False):
        ch = set_changes(a, b)
        per_pair.append(
            {
                "atoms_changed": int((ch > 0).sum()),
                "fraction_changed": float((ch > 0).float().mean()),
                "swaps": int(ch.sum()),
                "max_swaps_one_atom": int(ch.max()),
                "mean_swaps_per_changed_atom": float(ch[ch > 0].float().mean()) if (ch > 0).any() else 0.0,
            }
        )
    results["full_system"] = {
        "n_atoms": n_all,
        "n_fragments": f_all,
        "periodic": True,
        "slots_per_atom": int(states[0].shape[1]),
        "per_frame_pair": per_pair,
        "median_fraction_changed": float(np.median([p["fraction_changed"] for p in per_pair])),
        "median_swaps": float(np.median([p["swaps"] for p in per_pair])),
        "seconds": time.perf_counter() - t0,
    }
    print(
        f"full system: median {100 * results['full_system']['median_fraction_changed']:.1f} % of "
        f"{n_all} atoms change their top-{K_FRAGMENTS} set per {2 * args.stride} fs",
        flush=True,
    )
    del states

    # 3. sub-region path
    atoms, shift = vc.sphere_selection(top, frames[0], box, radius)
    z = torch.tensor(vc.atomic_numbers(top, atoms))
    fid = torch.tensor(fragment_ids_from_topology(top, atoms), dtype=torch.long)
    nf = int(fid.max()) + 1
    charge = torch.tensor(0.0, dtype=torch.float64)
    region_frames = [torch.tensor(f[atoms] + shift[atoms], dtype=torch.float64) for f in frames]
    region_pairs = []
    for a, b in zip(region_frames[:-1], region_frames[1:], strict=False):
        ch = set_changes(topk_state(a, fid, nf, None), topk_state(b, fid, nf, None))
        region_pairs.append({"atoms_changed": int((ch > 0).sum()), "swaps": int(ch.sum())})
    pair = (
        args.pair
        if args.pair is not None
        else int(np.argsort([p["swaps"] for p in region_pairs])[len(region_pairs) // 2])
    )
    xa, xb = region_frames[pair], region_frames[pair + 1]

    def path(t: float) -> torch.Tensor:
        return (1.0 - t) * xa + t * xb

    models = {v: vc.build_model(v, dtype=torch.float64) for v in ["lsr", "topk", "reference"]}

    @torch.no_grad()
    def energy(v: str, t: float) -> float:
        return float(models[v](path(t), z, fid, charge, None, None))

    @torch.no_grad()
    def energies_topk_and_all(t: float) -> tuple[float, float]:
        """Both energies with the local stage (identical in the two models) computed once."""
        x = path(t)
        m = models["lsr"]
        short = m.norm_local(
            m.local_stage(z, m.local_graph(x, None), m.embed(z, charge, {}, False), {}, False)
        )
        num_fragments = int(fid.max()) + 1
        centres = fragment_centroids(x, fid, num_fragments, None)
        out = []
        for v in ["topk", "lsr"]:
            mv = models[v]
            graph = mv.long_graph(x, centres, fid, None)
            long = mv.long_stage(z, fid, num_fragments, graph, short, {}, False)
            feats = mv.final_linear(torch.cat([mv.norm_output(short), mv.norm_output(long)], dim=-1))
            per_atom = mv.energy_head(feats[:, 0]).squeeze(-1) + mv.reference_energies[z].to(feats.dtype)
            out.append(float(per_atom.sum()))
        return out[0], out[1]

    same = all(
        torch.equal(a, b)
        for a, b in zip(
            models["lsr"].state_dict().values(), models["topk"].state_dict().values(), strict=False
        )
    )
    if not same:
        raise RuntimeError("the 'topk' and 'all' models must share their weights")

    max_disp = float((xb - xa).norm(dim=1).max())
    results["region"] = {
        "n_atoms": len(atoms),
        "n_fragments": nf,
        "periodic": False,
        "slots_per_atom": int(topk_state(xa, fid, nf, None).shape[1]),
        "per_frame_pair": region_pairs,
        "path_pair": pair,
        "path_max_atom_displacement_angstrom": max_disp,
    }
    print(
        f"region: {len(atoms)} atoms, {nf} fragments; path = frames {pair}->{pair + 1} "
        f"(max displacement {max_disp:.3f} A)",
        flush=True,
    )

    t0 = time.perf_counter()
    check_topk = energy("topk", 0.0)
    t_topk = time.perf_counter() - t0
    t0 = time.perf_counter()
    check_all = energy("lsr", 0.0)
    t_all = time.perf_counter() - t0
    split = energies_topk_and_all(0.0)
    results["region"]["energy_eval_s"] = {"topk": t_topk, "all": t_all}
    results["region"]["split_evaluation_error_eV"] = max(
        abs(split[0] - check_topk), abs(split[1] - check_all)
    )
    if results["region"]["split_evaluation_error_eV"] > 1e-9:
        raise RuntimeError(
            f"shared-local-stage evaluation disagrees with the model: {split} vs {(check_topk, check_all)}"
        )
    print(f"one float64 energy: topk {t_topk:.2f} s, all {t_all:.2f} s", flush=True)

    ts = np.linspace(0.0, 1.0, n_points)
    e_topk, e_all, swaps, cut_events, slot_events = [], [], [], [], []
    prev_topk = prev_local = None
    for i, t in enumerate(ts):
        et, ea = energies_topk_and_all(float(t))
        e_topk.append(et)
        e_all.append(ea)
        s_topk = topk_state(path(float(t)), fid, nf, None)
        s_local = local_state(path(float(t)))
        if i:
            swaps.append(int(set_changes(prev_topk, s_topk).sum()))
            lc = local_changes(prev_local, s_local)
            cut_events.append(lc["cutoff"] + lc["k_change"])
            slot_events.append(lc["slot"])
        prev_topk, prev_local = s_topk, s_local
        if i % 10 == 0:
            print(f"  path point {i + 1}/{n_points}", flush=True)
    e_topk, e_all = np.array(e_topk), np.array(e_all)
    # smooth-change scale: largest |dE_all/dt| on the path
    slope = float(np.max(np.abs(np.diff(e_all) / np.diff(ts)))) if n_points > 1 else 0.0
    results["path"] = {
        "t": ts.tolist(),
        "energy_topk_eV": e_topk.tolist(),
        "energy_all_eV": e_all.tolist(),
        "topk_swaps_per_interval": swaps,
        "local_cutoff_crossings_per_interval": cut_events,
        "local_slot_changes_per_interval": slot_events,
        "topk_swaps_total": int(sum(swaps)),
        "intervals_with_topk_swaps": int(sum(1 for s in swaps if s)),
        "local_cutoff_crossings_total": int(sum(cut_events)),
        "local_slot_changes_total": int(sum(slot_events)),
        "energy_change_all_eV": float(e_all[-1] - e_all[0]),
        "energy_change_topk_eV": float(e_topk[-1] - e_topk[0]),
        "max_abs_slope_all_eV_per_unit_t": slope,
        "rms_second_difference_all_eV": float(np.sqrt(np.mean(np.diff(e_all, 2) ** 2)))
        if n_points > 2
        else None,
        "rms_second_difference_topk_eV": float(np.sqrt(np.mean(np.diff(e_topk, 2) ** 2)))
        if n_points > 2
        else None,
    }

    # 4. isolated events
    def topk_count(a, b):
        return int(set_changes(a, b).sum())

    def cutoff_count(a, b):
        c = local_changes(a, b)
        return c["cutoff"] + c["k_change"]

    def slot_count(a, b):
        c = local_changes(a, b)
        return c["slot"] + c["k_change"] + c["cutoff"]

    def measure(kind: str, counts: list[int], state_fn, count_fn, models_at: list[str], wanted: int):
        events = []
        candidates = [i for i, c in enumerate(counts) if c > 0]
        weights = np.array([counts[i] for i in candidates], dtype=float)
        tries = 0
        while candidates and len(events) < wanted and tries < 4 * wanted:
            tries += 1
            i = int(rng.choice(candidates, p=weights / weights.sum()))
            bracket = isolate(path, float(ts[i]), float(ts[i + 1]), state_fn, count_fn, args.tol, rng)
            if bracket is None:
                continue
            a, b = bracket
            sa, sb = state_fn(path(a)), state_fn(path(b))
            event = {"t": [a, b], "interval": i}
            if kind == "topk":
                event["swaps"] = topk_count(sa, sb)
            else:
                event.update(local_changes(sa, sb))
                if kind == "slot" and (event["cutoff"] or event["k_change"]):
                    continue  # that bracket holds a cutoff crossing, not a pure slot change
            for v in models_at:
                event["jump_" + v + "_eV"] = energy(v, b) - energy(v, a)
            events.append(event)
        return events

    print("isolating top-K events ...", flush=True)
    n_control = max(1, n_events // 4)  # smooth-model control evaluations per kind
    topk_events = measure(
        "topk", swaps, lambda x: topk_state(x, fid, nf, None), topk_count, ["topk"], n_events
    )
    for e in topk_events[:n_control]:
        e["jump_lsr_eV"] = energy("lsr", e["t"][1]) - energy("lsr", e["t"][0])
    print("isolating local-cutoff crossings ...", flush=True)
    cut = measure("cutoff", cut_events, local_state, cutoff_count, ["reference"], n_events)
    for e in cut[:n_control]:
        e["jump_lsr_eV"] = energy("lsr", e["t"][1]) - energy("lsr", e["t"][0])
    print("isolating padded-slot changes ...", flush=True)
    slot = measure("slot", slot_events, local_state, slot_count, ["reference"], max(1, n_events // 2))

    def summary(events, key):
        vals = np.abs([e[key] for e in events if key in e])
        if len(vals) == 0:
            return None
        return {
            "n": int(len(vals)),
            "median_abs_eV": float(np.median(vals)),
            "max_abs_eV": float(np.max(vals)),
            "min_abs_eV": float(np.min(vals)),
        }

    smooth_bound = slope * args.tol
    results["events"] = {
        "topk": topk_events,
        "local_cutoff": cut,
        "local_slot": slot,
        "smooth_change_bound_eV": smooth_bound,
        "summary": {
            "topk_jump": summary(topk_events, "jump_topk_eV"),
            "reference_cutoff_crossing_jump": summary(cut, "jump_reference_eV"),
            "reference_slot_change_jump": summary(slot, "jump_reference_eV"),
            "smooth_model_at_topk_events": summary(topk_events, "jump_lsr_eV"),
            "smooth_model_at_cutoff_crossings": summary(cut, "jump_lsr_eV"),
        },
    }
    s = results["events"]["summary"]
    if s["topk_jump"] and s["reference_cutoff_crossing_jump"]:
        s["topk_over_cutoff_crossing_median"] = (
            s["topk_jump"]["median_abs_eV"] / s["reference_cutoff_crossing_jump"]["median_abs_eV"]
        )
        s["topk_over_cutoff_crossing_max"] = (
            s["topk_jump"]["max_abs_eV"] / s["reference_cutoff_crossing_jump"]["max_abs_eV"]
        )
    if s["topk_jump"]:
        s["topk_median_over_kT"] = s["topk_jump"]["median_abs_eV"] / vc.KT_300K_EV
        p = results["path"]
        s["topk_steps_along_path"] = p["topk_swaps_total"]
        s["expected_accumulated_jump_rms_eV"] = float(
            np.sqrt(p["topk_swaps_total"])
            * np.sqrt(np.mean(np.square([e["jump_topk_eV"] for e in topk_events])))
        )
    total = time.perf_counter() - t_start
    results["total_wall_s"] = total

    # output
    print()
    print(
        f"top-{K_FRAGMENTS} fragment sets, all {n_all} atoms ML, {f_all} fragments, periodic; per {2 * args.stride} fs:"
    )
    vc.print_table(
        [
            [k, p["atoms_changed"], 100 * p["fraction_changed"], p["swaps"], p["max_swaps_one_atom"]]
            for k, p in enumerate(per_pair)
        ],
        ["pair", "atoms_changed", "%", "swaps", "max/atom"],
    )
    p = results["path"]
    print(f"\npath frames {pair}->{pair + 1}, region {len(atoms)} atoms ({nf} fragments), {n_points} points:")
    print(
        f"  top-K swaps along the path: {p['topk_swaps_total']} (in {p['intervals_with_topk_swaps']} of "
        f"{n_points - 1} intervals); local cutoff crossings: {p['local_cutoff_crossings_total']}; "
        f"padded-slot changes: {p['local_slot_changes_total']}"
    )
    print(
        f"  E_all change {p['energy_change_all_eV']:.4g} eV, E_topk change {p['energy_change_topk_eV']:.4g} eV; "
        f"rms 2nd difference all {p['rms_second_difference_all_eV']} / topk {p['rms_second_difference_topk_eV']} eV"
    )
    rows = []
    for name, key in [
        ("top-K swap (topk model)", "topk_jump"),
        ("5 A cutoff crossing (reference local)", "reference_cutoff_crossing_jump"),
        ("padded-slot change (reference local)", "reference_slot_change_jump"),
        ("smooth model at top-K events", "smooth_model_at_topk_events"),
        ("smooth model at cutoff crossings", "smooth_model_at_cutoff_crossings"),
    ]:
        d = s.get(key)
        rows.append([name, d and d["n"], d and d["median_abs_eV"], d and d["max_abs_eV"]])
    print(
        f"\nisolated jumps (bracket width {args.tol:g} of the path; smooth change across it <= {smooth_bound:.2g} eV):"
    )
    vc.print_table(rows, ["event", "n", "median|dE| eV", "max|dE| eV"])
    if "topk_over_cutoff_crossing_median" in s:
        print(
            f"top-K / cutoff-crossing jump: median ratio {s['topk_over_cutoff_crossing_median']:.3g}, "
            f"max ratio {s['topk_over_cutoff_crossing_max']:.3g}"
        )
    print(f"total wall time {total:.0f} s")
    path_json = vc.write_json("topk_jumps_quick.json" if quick else "topk_jumps.json", results)
    print(f"wrote {path_json}")
    if vc.have_matplotlib():
        plot(results, path_json.with_suffix(".png"))


def plot(results, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = results["path"]
    t = np.array(p["t"])
    et, ea = np.array(p["energy_topk_eV"]), np.array(p["energy_all_eV"])
    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    ax = [axes[0], axes[2], axes[3]]
    diff = 1e6 * ((et - ea) - (et[0] - ea[0]))
    axes[1].plot(t, diff, "o-", ms=3, color="C3")
    axes[1].set_xlabel("path parameter")
    axes[1].set_ylabel("(E_topk - E_all) - value at 0 (micro-eV)")
    axes[1].set_title("top-K minus smooth: steps")
    ax[0].plot(t, 1000 * (et - et[0]), "o-", ms=3, label="topk (K=64)")
    ax[0].plot(t, 1000 * (ea - ea[0]), "s-", ms=3, label="all (smooth)")
    ax[0].set_xlabel("path parameter (frame k -> k+1, 10 fs)")
    ax[0].set_ylabel("E - E(0) (meV)")
    ax[0].legend()
    ax[0].set_title(f"region {results['region']['n_atoms']} atoms, float64 random model")
    mid = 0.5 * (t[1:] + t[:-1])
    ax[1].bar(mid, p["topk_swaps_per_interval"], width=0.8 * (t[1] - t[0]), label="top-K swaps")
    ax[1].plot(mid, p["local_cutoff_crossings_per_interval"], "k.", label="5 A cutoff crossings")
    ax[1].set_xlabel("path parameter")
    ax[1].set_ylabel("events per interval")
    ax[1].legend()
    ev = results["events"]
    groups = [
        ("top-K swap\n(topk)", [e["jump_topk_eV"] for e in ev["topk"]]),
        ("cutoff crossing\n(reference)", [e["jump_reference_eV"] for e in ev["local_cutoff"]]),
        ("padded slot\n(reference)", [e["jump_reference_eV"] for e in ev["local_slot"]]),
        (
            "smooth at\nall events",
            [e["jump_lsr_eV"] for e in ev["topk"] + ev["local_cutoff"] if "jump_lsr_eV" in e],
        ),
    ]
    for k, (_name, vals) in enumerate(groups):
        vals = np.maximum(np.abs(vals), 1e-16)
        ax[2].semilogy(np.full(len(vals), k) + np.linspace(-0.15, 0.15, len(vals)), vals, "o")
    ax[2].set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
    ax[2].set_ylabel("|jump| (eV)")
    ax[2].set_title("isolated events")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

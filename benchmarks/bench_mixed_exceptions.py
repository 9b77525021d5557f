"""Cost of openmm-ml 1.7's mechanical-embedding bookkeeping: N_ML (N_ML - 1) / 2
NonbondedForce exceptions.

``MLPotential.createMixedSystem`` (openmm-ml 1.7) (1) copies the System through XML,
removing bonded terms and constraints inside the ML region (``_removeBonds``); (2) adds an
exception with zero charge product and zero epsilon for *every* pair of ML atoms to each
NonbondedForce; (3) lets the potential add its Force.  This script times those phases
separately (the exception loop is copied from openmm-ml, so only the loop is timed) and
also runs the real ``createMixedSystem`` end to end, for ML regions of 600 atoms
(protein + nearest waters) and 3000 atoms (protein + nearest 806 waters) of villin
(8867 atoms; amber14-all + amber14/tip3pfb, PME 1 nm, HBonds).  It records resident-memory
deltas, the XmlSerializer size of the System, and the Context-creation time, memory and
ms/step on the CPU platform of the MM part alone:

  mm          the MM System as built by the ForceField
  mm+exc      the same System plus the exceptions (nothing else changed): isolates their cost
  mm_part     what createMixedSystem leaves besides the ML force (bonded terms and
              constraints inside the region removed, exceptions added); the ML atoms feel
              no intramolecular force here, so it is not integrated (its unconstrained,
              unbonded ML atoms fly apart): only force evaluations are timed

    python benchmarks/bench_mixed_exceptions.py            # 600 and 3000 ML atoms
    python benchmarks/bench_mixed_exceptions.py --quick    # 600 ML atoms, fewer steps
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import time

import torch  # noqa: F401  (before openmmtorch)
import villin_common as vc


def add_exceptions_like_openmmml(system, atoms) -> int:
    """openmm-ml 1.7 createMixedSystem, step 2 (copied): returns exceptions added."""
    import openmm

    added = 0
    atom_list = list(atoms)
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            before = force.getNumExceptions()
            for i in range(len(atom_list)):
                for j in range(i):
                    force.addException(atom_list[i], atom_list[j], 0, 1, 0, True)
            added += force.getNumExceptions() - before
        elif isinstance(force, openmm.CustomNonbondedForce):
            existing = set(tuple(force.getExclusionParticles(i)) for i in range(force.getNumExclusions()))
            for i in range(len(atom_list)):
                a1 = atom_list[i]
                for j in range(i):
                    a2 = atom_list[j]
                    if (a1, a2) not in existing and (a2, a1) not in existing:
                        force.addExclusion(a1, a2)
                        added += 1
    return added


def rss() -> float:
    """Resident memory in MiB after garbage collection and ``malloc_trim`` (freed heap pages
    are handed back, so deltas measure live memory rather than allocator reuse)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return vc.current_rss_mb()


def xml_size(system) -> tuple[int, float]:
    import openmm

    t0 = time.perf_counter()
    text = openmm.XmlSerializer.serialize(system)
    return len(text), time.perf_counter() - t0


def step_cost(system, positions, threads: int, warmup: int, steps: int, dynamics: bool = True) -> dict:
    """Context creation (time, RSS), ms per force+energy evaluation at the initial
    positions and, with ``dynamics``, ms/step of LangevinMiddle at 1 fs."""
    import openmm
    import openmm.unit as unit

    integrator = openmm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 1 / unit.picosecond, 1.0 * unit.femtoseconds
    )
    integrator.setRandomNumberSeed(1)
    before = rss()
    t0 = time.perf_counter()
    context = openmm.Context(
        system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": str(threads)}
    )
    context.setPositions(positions)
    t_context = time.perf_counter() - t0
    context_mb = rss() - before
    t0 = time.perf_counter()
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        context.getState(getForces=True, getEnergy=True)
    t_eval = time.perf_counter() - t0
    result = {
        "context_creation_s": t_context,
        "context_rss_delta_mb": context_mb,
        "first_energy_s": t_first,
        "potential_kj_mol": energy,
        "force_evaluations": steps,
        "ms_per_force_eval": 1000 * t_eval / steps,
    }
    if dynamics:
        integrator.step(warmup)
        t0 = time.perf_counter()
        integrator.step(steps)
        context.getState(getEnergy=True)
        result.update({"steps": steps, "ms_per_step": 1000 * (time.perf_counter() - t0) / steps})
    del context, integrator
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="600 ML atoms only, 10 steps")
    parser.add_argument("--steps", type=int, default=None, help="steps and force evaluations (default 50)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default=None, help="comma-separated ML region sizes (default 600,3000)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([600] if args.quick else [600, 3000])
    steps, warmup = (10, 2) if args.quick else (50, 5)
    if args.steps:
        steps = args.steps

    import openmm
    import openmm.app as app
    import openmm.unit as unit
    from openmmml import MLPotential

    pdb = vc.villin_pdb()
    top = pdb.topology
    pos = vc.positions_angstrom(pdb)
    box = vc.box_angstrom(top)
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
    t0 = time.perf_counter()
    base = forcefield.createSystem(
        top, nonbondedMethod=app.PME, nonbondedCutoff=1.0 * unit.nanometer, constraints=app.HBonds
    )
    t_mm = time.perf_counter() - t0
    nb = next(f for f in base.getForces() if isinstance(f, openmm.NonbondedForce))
    base_size, base_ser = xml_size(base)
    results = {
        "benchmark": "bench_mixed_exceptions",
        "quick": args.quick,
        "threads": args.threads,
        "n_atoms": top.getNumAtoms(),
        "mm_create_system_s": t_mm,
        "mm_exceptions": nb.getNumExceptions(),
        "mm_xml_bytes": base_size,
        "mm_xml_serialize_s": base_ser,
        "steps": steps,
        "warmup": warmup,
        "regions": [],
    }
    print("pure MM system: step timing ...", flush=True)
    results["mm"] = step_cost(base, pdb.positions, args.threads, warmup, steps)
    potential = MLPotential("e2former-lsr", randomInit=True, seed=0)

    for n in sizes:
        atoms, _ = vc.protein_plus_nearest(top, pos, box, n_atoms=n)
        n_waters = sum(
            1 for r in top.residues() if r.name == "HOH" and any(a.index in set(atoms) for a in r.atoms())
        )
        region = {"n_ml_atoms": len(atoms), "n_waters": n_waters, "pairs": len(atoms) * (len(atoms) - 1) // 2}
        print(f"ML region {len(atoms)} atoms: phases ...", flush=True)
        r0 = rss()
        t0 = time.perf_counter()
        system = MLPotential._removeBonds(None, base, atoms, True, True)
        region["remove_bonds_s"] = time.perf_counter() - t0
        r1 = rss()
        t0 = time.perf_counter()
        region["exceptions_added"] = add_exceptions_like_openmmml(system, atoms)
        region["exception_loop_s"] = time.perf_counter() - t0
        r2 = rss()
        nbx = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
        region["exceptions_total"] = nbx.getNumExceptions()
        region["xml_bytes_mm_part"], region["xml_serialize_s_mm_part"] = xml_size(system)
        t0 = time.perf_counter()
        potential._impl.addForces(top, system, atoms, 0)
        region["ml_add_forces_s"] = time.perf_counter() - t0
        r3 = rss()
        region["xml_bytes_mixed"], region["xml_serialize_s_mixed"] = xml_size(system)
        region["rss_delta_mb"] = {"remove_bonds": r1 - r0, "exceptions": r2 - r1, "ml_force": r3 - r2}
        region["bytes_per_exception_rss"] = (r2 - r1) * 2**20 / max(region["exceptions_added"], 1)
        del system
        gc.collect()

        print(f"ML region {len(atoms)} atoms: createMixedSystem end to end ...", flush=True)
        r0 = rss()
        t0 = time.perf_counter()
        mixed = potential.createMixedSystem(top, base, atoms)
        region["create_mixed_system_s"] = time.perf_counter() - t0
        region["create_mixed_system_rss_delta_mb"] = rss() - r0
        del mixed
        gc.collect()

        print(f"ML region {len(atoms)} atoms: MM step timing (mm+exc, mm_part) ...", flush=True)
        with_exc = openmm.XmlSerializer.clone(base)
        add_exceptions_like_openmmml(with_exc, atoms)
        region["mm+exc"] = step_cost(with_exc, pdb.positions, args.threads, warmup, steps)
        del with_exc
        mm_part = MLPotential._removeBonds(None, base, atoms, True, True)
        add_exceptions_like_openmmml(mm_part, atoms)
        region["mm_part"] = step_cost(mm_part, pdb.positions, args.threads, warmup, steps, dynamics=False)
        del mm_part
        gc.collect()
        results["regions"].append(region)

    mm = results["mm"]
    print()
    print(
        f"villin {top.getNumAtoms()} atoms, MM: {results['mm_exceptions']} exceptions, "
        f"XML {base_size / 1e6:.1f} MB, {mm['ms_per_step']:.1f} ms/step, {mm['ms_per_force_eval']:.1f} ms/force "
        f"evaluation, context {mm['context_creation_s']:.2f} s"
    )
    rows = []
    for r in results["regions"]:
        rows.append(
            [
                r["n_ml_atoms"],
                r["exceptions_added"],
                r["remove_bonds_s"],
                r["exception_loop_s"],
                r["ml_add_forces_s"],
                r["create_mixed_system_s"],
                r["rss_delta_mb"]["exceptions"],
                r["xml_bytes_mm_part"] / 1e6,
                r["mm+exc"]["context_creation_s"],
                r["mm+exc"]["ms_per_step"],
                r["mm+exc"]["ms_per_step"] / mm["ms_per_step"],
                r["mm+exc"]["ms_per_force_eval"] / mm["ms_per_force_eval"],
                r["mm_part"]["ms_per_force_eval"] / mm["ms_per_force_eval"],
            ]
        )
    vc.print_table(
        rows,
        [
            "N_ML",
            "exc_added",
            "removeBonds_s",
            "exc_loop_s",
            "ml_force_s",
            "createMixed_s",
            "exc_RSS_MB",
            "XML_MB",
            "ctx_s(+exc)",
            "ms/step(+exc)",
            "x_mm_step",
            "x_mm_eval",
            "x_mm_eval(part)",
        ],
    )
    path = vc.write_json("mixed_exceptions_quick.json" if args.quick else "mixed_exceptions.json", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

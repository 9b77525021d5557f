"""OpenMM ms/step of the villin mixed system on the CPU platform.

ML region = the protein (582 atoms, E2Former-LSR, the small random network:
``MLPotential('e2former-lsr', randomInit=True, seed=0)``); MM = amber14-all +
amber14/tip3pfb, PME with a 1 nm cutoff, HBonds constraints (constraints inside the ML
region are removed by createMixedSystem), LangevinMiddleIntegrator 300 K, 1/ps, 1 fs.
Backends: 'torchforce' (openmmtorch.TorchForce running the TorchScript module inside
OpenMM) and 'pythonforce' (openmm.PythonForce calling the same scripted module from
Python).  The pure MM system is timed for reference.  Also checks that both backends give
the same potential energy.

    python benchmarks/bench_openmm_step.py            # 20 steps after 3 warm-up steps
    python benchmarks/bench_openmm_step.py --quick    # 3 steps after 1 warm-up step
"""

from __future__ import annotations

import argparse
import time

import torch  # noqa: F401  (before openmmtorch)
import villin_common as vc


def mm_system(topology):
    import openmm.app as app
    import openmm.unit as unit

    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
    return forcefield.createSystem(
        topology, nonbondedMethod=app.PME, nonbondedCutoff=1.0 * unit.nanometer, constraints=app.HBonds
    )


def time_steps(system, positions, threads: int, warmup: int, steps: int) -> dict:
    import openmm
    import openmm.unit as unit

    integrator = openmm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 1 / unit.picosecond, 1.0 * unit.femtoseconds
    )
    integrator.setRandomNumberSeed(1)
    platform = openmm.Platform.getPlatformByName("CPU")
    t0 = time.perf_counter()
    context = openmm.Context(system, integrator, platform, {"Threads": str(threads)})
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    t_context = time.perf_counter() - t0
    t0 = time.perf_counter()
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    t_energy = time.perf_counter() - t0
    t0 = time.perf_counter()
    integrator.step(warmup)
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    integrator.step(steps)
    context.getState(getEnergy=True)  # make sure the last step has finished
    elapsed = time.perf_counter() - t0
    final = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    del context
    return {
        "context_creation_s": t_context,
        "first_energy_s": t_energy,
        "warmup_steps": warmup,
        "warmup_s": t_warm,
        "steps": steps,
        "elapsed_s": elapsed,
        "ms_per_step": 1000 * elapsed / steps,
        "initial_potential_kj_mol": energy,
        "final_potential_kj_mol": final,
        "ns_per_day": 86400 * 1e-6 * steps / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 steps after 1 warm-up step")
    parser.add_argument("--threads", type=int, default=2, help="torch and OpenMM CPU threads (default 2)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--mm-steps", type=int, default=None, help="steps for the pure MM system")
    args = parser.parse_args()
    steps = args.steps or (3 if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    mm_steps = args.mm_steps or (20 if args.quick else 200)
    torch.set_num_threads(args.threads)

    from openmmml import MLPotential

    pdb = vc.villin_pdb()
    top = pdb.topology
    ml_atoms = vc.protein_atoms(top)
    base = mm_system(top)
    results = {
        "benchmark": "bench_openmm_step",
        "quick": args.quick,
        "threads": args.threads,
        "n_atoms": top.getNumAtoms(),
        "n_ml_atoms": len(ml_atoms),
        "timestep_fs": 1.0,
        "platform": "CPU",
        "runs": {},
    }
    print(f"pure MM: {mm_steps} steps ...", flush=True)
    results["runs"]["mm"] = time_steps(base, pdb.positions, args.threads, warmup, mm_steps)
    potential = MLPotential("e2former-lsr", randomInit=True, seed=0)
    for backend in ["torchforce", "pythonforce"]:
        print(f"mixed, {backend}: {steps} steps after {warmup} warm-up ...", flush=True)
        t0 = time.perf_counter()
        system = potential.createMixedSystem(top, base, ml_atoms, backend=backend)
        t_create = time.perf_counter() - t0
        run = time_steps(system, pdb.positions, args.threads, warmup, steps)
        run["create_mixed_system_s"] = t_create
        results["runs"][backend] = run

    runs = results["runs"]
    results["energy_difference_torch_vs_python_kj_mol"] = abs(
        runs["torchforce"]["initial_potential_kj_mol"] - runs["pythonforce"]["initial_potential_kj_mol"]
    )
    results["ratio_pythonforce_over_torchforce"] = (
        runs["pythonforce"]["ms_per_step"] / runs["torchforce"]["ms_per_step"]
    )
    results["ratio_mixed_torchforce_over_mm"] = runs["torchforce"]["ms_per_step"] / runs["mm"]["ms_per_step"]
    rows = [
        [
            name,
            r.get("create_mixed_system_s"),
            r["context_creation_s"],
            r["steps"],
            r["ms_per_step"],
            r["ns_per_day"],
            r["initial_potential_kj_mol"],
        ]
        for name, r in runs.items()
    ]
    print()
    print(f"villin, CPU platform, {args.threads} threads, 1 fs, ML = protein ({len(ml_atoms)} atoms)")
    vc.print_table(rows, ["system", "create_s", "context_s", "steps", "ms/step", "ns/day", "E0_kJ/mol"])
    print(
        f"pythonforce / torchforce = {results['ratio_pythonforce_over_torchforce']:.3f}; "
        f"torchforce mixed / pure MM = {results['ratio_mixed_torchforce_over_mm']:.1f}; "
        f"|E0(torchforce) - E0(pythonforce)| = {results['energy_difference_torch_vs_python_kj_mol']:.2e} kJ/mol"
    )
    path = vc.write_json("openmm_step_quick.json" if args.quick else "openmm_step.json", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

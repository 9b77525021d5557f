"""The README's main job: a short ML/MM equilibration of villin, then an analysis report.

Villin headpiece in water comes with OpenMM (``openmm/app/data/test.pdb``); the protein
(582 atoms) is the ML region, water and ions are classical (amber14 + TIP3P-FB, PME).
Stages: classical (MM-only) energy minimisation, then ML/MM Langevin MD at 300 K with a 1 fs step (X-H bonds
constrained).  Outputs in the run folder: ``state.csv``, ``trajectory.dcd``,
``final.pdb``, ``report.json`` and ``report.png``.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

SHIPPED_POTENTIAL = "e2former-lsr"


def villin_pdb_path() -> str:
    import openmm.app as app

    return os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")


def say(message: str) -> None:
    print(f"[e2former demo] {message}", flush=True)


def potential_options() -> dict:
    """The shipped default potential, or a loudly labelled random network until one ships."""
    from .checkpoints import find_shipped_potential

    if find_shipped_potential(SHIPPED_POTENTIAL):
        return {}
    say(
        "WARNING: no trained weights are shipped yet; using a seeded RANDOM network "
        "(plumbing and timing only, not physics)"
    )
    return {"randomInit": True, "seed": 0}


def build_simulation(platform_name):
    import openmm
    import openmm.app as app
    import openmm.unit as unit
    from openmmml import MLPotential

    pdb = app.PDBFile(villin_pdb_path())
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
    mm_system = forcefield.createSystem(
        pdb.topology,
        nonbondedMethod=app.PME,
        nonbondedCutoff=1.0 * unit.nanometer,
        constraints=app.HBonds,
    )
    ml_atoms = [
        a.index for a in pdb.topology.atoms() if a.residue.name not in ("HOH", "Cl", "CL", "NA", "Na")
    ]
    say(f"{pdb.topology.getNumAtoms()} atoms; ML region = protein ({len(ml_atoms)} atoms), rest MM (PME)")
    say("classical pre-minimisation of the starting structure (MM only, fast)")
    positions = minimise_classically(pdb, mm_system)
    potential = MLPotential(SHIPPED_POTENTIAL, **potential_options())
    # keep the X-H constraints inside the ML region too (removeConstraints=False): a
    # 1 fs step with rigid X-H bonds is robust even for an untrained network
    system = potential.createMixedSystem(pdb.topology, mm_system, ml_atoms, removeConstraints=False)
    integrator = openmm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 1.0 / unit.picosecond, 1.0 * unit.femtosecond
    )
    platform = openmm.Platform.getPlatformByName(platform_name) if platform_name else fastest_platform()
    simulation = app.Simulation(pdb.topology, system, integrator, platform)
    simulation.context.setPositions(positions)
    say(f"platform: {platform.getName()}")
    return simulation, ml_atoms


def minimise_classically(pdb, mm_system):
    """Relax clashes with the MM force field alone (an ML/MM minimisation costs an ML evaluation
    per line-search step, minutes on a CPU)."""
    import copy

    import openmm

    context = openmm.Context(copy.deepcopy(mm_system), openmm.VerletIntegrator(0.001), fastest_platform())
    context.setPositions(pdb.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    return context.getState(getPositions=True).getPositions()


def fastest_platform():
    import openmm

    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    for name in ("CUDA", "OpenCL", "CPU", "Reference"):
        if name in names:
            return openmm.Platform.getPlatformByName(name)
    raise RuntimeError("no OpenMM platform available")


def run_md(simulation, folder: str, steps: int) -> float:
    import openmm.app as app

    interval = max(1, steps // 30)
    simulation.reporters.append(app.DCDReporter(os.path.join(folder, "trajectory.dcd"), interval))
    simulation.reporters.append(
        app.StateDataReporter(
            os.path.join(folder, "state.csv"),
            interval,
            step=True,
            time=True,
            potentialEnergy=True,
            kineticEnergy=True,
            totalEnergy=True,
            temperature=True,
            speed=True,
        )
    )
    simulation.reporters.append(
        app.StateDataReporter(
            sys.stdout,
            max(1, steps // 10),
            step=True,
            temperature=True,
            potentialEnergy=True,
            speed=True,
            progress=True,
            remainingTime=True,
            totalSteps=steps,
        )
    )
    start = time.perf_counter()
    simulation.step(steps)
    return time.perf_counter() - start


def analyse(folder: str, ml_atoms) -> dict:
    """RMSD and radius of gyration of the protein, temperature and energy from the CSV."""
    import mdtraj

    top = mdtraj.load_topology(os.path.join(folder, "final.pdb"))
    traj = mdtraj.load_dcd(os.path.join(folder, "trajectory.dcd"), top=top)
    protein = top.select("protein")
    traj = traj.atom_slice(protein)  # positions are never wrapped, so the protein stays whole
    backbone = traj.topology.select("backbone")
    rmsd = mdtraj.rmsd(traj, traj, 0, atom_indices=backbone) * 10.0
    rg = mdtraj.compute_rg(traj) * 10.0
    data = np.genfromtxt(os.path.join(folder, "state.csv"), delimiter=",", names=True)
    temperature = np.atleast_1d(data["Temperature_K"])
    return {
        "frames": int(traj.n_frames),
        "backbone_rmsd_angstrom": rmsd.tolist(),
        "radius_of_gyration_angstrom": rg.tolist(),
        "temperature_K": temperature.tolist(),
        "potential_energy_kJ_mol": np.atleast_1d(data["Potential_Energy_kJmole"]).tolist(),
        "final_backbone_rmsd_angstrom": float(rmsd[-1]),
        "mean_temperature_last_half_K": float(temperature[len(temperature) // 2 :].mean()),
    }


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].plot(report["backbone_rmsd_angstrom"])
    axes[0].set(title="backbone RMSD vs first frame", xlabel="frame", ylabel="Å")
    axes[1].plot(report["radius_of_gyration_angstrom"])
    axes[1].set(title="radius of gyration", xlabel="frame", ylabel="Å")
    axes[2].plot(report["temperature_K"])
    axes[2].set(title="temperature", xlabel="report", ylabel="K")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_demo(folder: str = "runs/demo", steps: int = 200, platform=None) -> dict:
    import openmm.app as app

    os.makedirs(folder, exist_ok=True)
    say("building the ML/MM system (villin in water, protein = E2Former-LSR)")
    simulation, ml_atoms = build_simulation(platform)
    say(f"Langevin MD at 300 K, 1 fs, {steps} steps")
    seconds = run_md(simulation, folder, steps)
    state = simulation.context.getState(getPositions=True, enforcePeriodicBox=False)
    with open(os.path.join(folder, "final.pdb"), "w") as handle:
        app.PDBFile.writeFile(simulation.topology, state.getPositions(), handle)
    say(f"MD took {seconds:.1f} s ({1000 * seconds / steps:.0f} ms/step); analysing")
    report = analyse(folder, ml_atoms)
    report["ms_per_step"] = 1000 * seconds / steps
    with open(os.path.join(folder, "report.json"), "w") as handle:
        json.dump(report, handle, indent=1)
    plot(report, os.path.join(folder, "report.png"))
    say(
        f"final backbone RMSD {report['final_backbone_rmsd_angstrom']:.2f} Å, mean T (last half) "
        f"{report['mean_temperature_last_half_K']:.0f} K; report: {folder}/report.json, report.png"
    )
    return report

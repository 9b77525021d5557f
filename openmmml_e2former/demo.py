"""The README's main job: a short ML/MM equilibration of villin, then the analysis report.

Villin headpiece comes with OpenMM (``openmm/app/data/test.pdb``).  The demo strips its
solvent and hands the protein to the protocol engine with the ``quick-check`` preset:
preparation (pdbfixer, re-solvation with 1.0 nm padding, 0.15 M NaCl), the whole protein
(582 atoms) as E2Former-LSR ML region in classical water (amber14 + TIP3P-FB, PME),
restrained classical minimisation, NVT heating, NPT with restraints tapered to zero and
an unrestrained NPT production, all with 1 fs steps; then ``e2former analyze``.
Outputs: the run folder (``runs/demo``) and its ``analysis/report.html``.

The potential is the shipped default (``MLPotential('e2former-lsr')``); while no trained
weights are shipped, the protocol's ``randomInit: auto`` falls back to a seeded random
network and says so loudly.
"""

from __future__ import annotations

import os
import time

SPLIT = {"heat": 0.2, "npt": 0.2, "production": 0.6}


def say(message: str) -> None:
    print(f"[e2former demo] {message}", flush=True)


def villin_pdb_path() -> str:
    import openmm.app as app

    return os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")


def write_villin_protein(path: str) -> str:
    """Villin without its water and ions (the protocol solvates it again)."""
    import mdtraj

    traj = mdtraj.load(villin_pdb_path())
    traj.atom_slice(traj.topology.select("protein")).save_pdb(path)
    return path


def demo_protocol(steps: int):
    """quick-check with ``steps`` MD steps in all, split 20/20/60 % over heat/npt/production."""
    from .simulate import load_protocol

    protocol = load_protocol("quick-check")
    for stage in protocol.stages:
        if stage["name"] in SPLIT:
            n = max(10, int(round(steps * SPLIT[stage["name"]])))
            stage["steps"] = n
            stage["checkpoint_interval"] = n
            stage["report_interval"] = max(1, n // 20)
            stage["trajectory_interval"] = max(1, n // 10)
    protocol.name = "demo (quick-check)"
    return protocol


OLD_DEMO_FILES = {"state.csv", "trajectory.dcd", "final.pdb", "report.json", "report.png"}


def remove_old_demo_outputs(folder: str) -> None:
    """Delete the outputs of the earlier demo (before the protocol engine), and only those."""
    if os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, "run.json")):
        names = set(os.listdir(folder))
        if names and names <= OLD_DEMO_FILES:
            say(f"removing the previous demo's outputs in {folder}")
            for name in names:
                os.remove(os.path.join(folder, name))


def run_demo(folder: str = "runs/demo", steps: int = 200, platform=None) -> dict:
    """Run the demo into ``folder`` (started afresh each time); return the analysis summary."""
    from .analysis.report import analyze_run
    from .simulate import run_protocol

    started = time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(folder)), exist_ok=True)
    pdb = write_villin_protein(os.path.join(os.path.dirname(os.path.abspath(folder)), "villin_protein.pdb"))
    say(f"villin headpiece (OpenMM test.pdb) without solvent -> {pdb}")
    say(f"protocol quick-check, {steps} ML/MM steps of 1 fs in all; ML region = the whole protein")
    say(
        "ML forces cost ~1 s per step on a 2-core CPU: expect about "
        f"{max(1, round((steps * 1.2 + 60) / 60))} min, with a progress bar per stage"
    )
    remove_old_demo_outputs(folder)
    timings = run_protocol(
        demo_protocol(steps), pdb, folder, ml_selection="protein", overwrite=True, platform=platform
    )
    say("analysing the trajectory (mdtraj)")
    summary = analyze_run(folder)
    production = next(s for s in summary["stages"] if s["name"] == "production")
    say(
        f"production: mean T {production['mean_temperature_K']:.0f} K, density "
        f"{production['mean_density_g_ml']:.3f} g/cm3; backbone RMSD (last frame) "
        f"{summary['rmsd_first']['last']:.2f} Å; {timings['production']['ns_per_day']:.3g} ns/day"
    )
    if summary["random_weights"]:
        say("REMINDER: the ML region used a seeded RANDOM network (no trained weights shipped yet)")
    say(
        f"report: {os.path.join(folder, 'analysis', 'report.html')} "
        f"(total {time.perf_counter() - started:.0f} s)"
    )
    return summary

"""Stability checks of the shipped potential (numbers go into the model card).

``python scripts/stability.py villin --steps 300``: villin headpiece (OpenMM's test.pdb) in TIP3P-FB
water, protein = ML (E2Former-LSR), rest AMBER14, PME, HBonds constraints on the MM part, Langevin
300 K, 1 fs, after an MM-only minimisation and a short ML/MM minimisation. Reports potential
energy, temperature, NaN checks and the largest relative change of any protein bond length.

``python scripts/stability.py nve --steps 2000``: ACE-ALA-ALA-NME (tests/data/ace_ala_nme.pdb),
ML only, in vacuum, velocity Verlet (0.5 fs) after 300 K velocities: total-energy drift (linear fit)
and fluctuation.

``python scripts/stability.py explore [--molecules all|dipeptides] [--model-path CKPT]``: ML-driven
MD (600 K, 1 fs, 400 steps, vacuum, from AMBER-minimised starts) of the 66 capped peptides of
active-learning round 1 (or its 26 dipeptides); counts those that break a bond.

``python scripts/stability.py locality stability/villin-20ps-al3-run [--model-path CKPT]``: for each
saved frame and residue, the largest difference between the forces the potential puts on the
residue in the whole protein and in its 6 Å neighbourhood (a label-free check of the long-range
extrapolation from fragments to a protein).

``python scripts/stability.py run-folder stability/villin-20ps-al3-run``: summary of a protocol run
folder (``e2former run``, possibly unfinished): steps done, temperatures, whether every reported
energy and saved frame is finite, and the largest relative change of an ML-region bond length over
the saved frames (against the prepared structure). Writes ``<folder>/stability-summary.json``.

Each other check writes ``runs/stability/<name>-<precision>.json``; ``scripts/write_model_card.py``
puts them into the model card. (The bond stretch that was ``stretch`` here, and the other research
probes, are in ``research/``.)
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from stability_records import unpack_for

from openmmml_e2former.data.exploration import BROKEN, bond_change, bond_pairs


def weights_sha256(model_path: str | None) -> str:
    """SHA-256 of the weights a check used (the shipped file unless ``model_path``)."""
    from openmmml_e2former.checkpoints import file_sha256
    from openmmml_e2former.potential import default_weights

    return file_sha256(model_path or default_weights("e2former-lsr"))


def _potential(model_path: str | None):
    from openmmml import MLPotential

    return MLPotential("e2former-lsr", modelPath=model_path) if model_path else MLPotential("e2former-lsr")


def villin(steps: int, report: int, precision: str, model_path: str | None = None) -> dict:
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    pdb = app.PDBFile(os.path.join(os.path.dirname(app.__file__), "data", "test.pdb"))
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
    mm_system = forcefield.createSystem(
        pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=1 * unit.nanometer, constraints=app.HBonds
    )
    ml_atoms = [a.index for a in pdb.topology.atoms() if a.residue.name not in ("HOH", "Cl", "Na")]
    platform = openmm.Platform.getPlatformByName("CPU")
    props = {"Threads": "1"}
    mm_context = openmm.Context(mm_system, openmm.VerletIntegrator(0.001), platform, props)
    mm_context.setPositions(pdb.positions)
    openmm.LocalEnergyMinimizer.minimize(mm_context, 10.0, 500)
    positions = mm_context.getState(getPositions=True).getPositions()
    system = _potential(model_path).createMixedSystem(pdb.topology, mm_system, ml_atoms, precision=precision)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(system, integrator, platform, props)
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 50)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    pairs = bond_pairs(pdb.topology, ml_atoms)
    start_pos = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    reference = np.linalg.norm(start_pos[pairs[:, 0]] - start_pos[pairs[:, 1]], axis=1)
    dof = 3 * system.getNumParticles() - system.getNumConstraints() - 3
    rows, t0 = [], time.time()
    for done in range(report, steps + 1, report):
        integrator.step(report)
        state = context.getState(getEnergy=True, getPositions=True)
        pos = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        row = {
            "step": done,
            "potential_kj_mol": state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            "temperature_k": 2 * kinetic / (dof * 0.00831446261815324),
            "max_bond_change": float(bond_change(pos, pairs, reference).max()),
            "finite": bool(np.isfinite(pos).all()),
            "seconds": round(time.time() - t0, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if not row["finite"]:
            break
    return {"system": "villin test.pdb, protein ML / water+ions AMBER14", "ml_atoms": len(ml_atoms),
            "steps": rows[-1]["step"], "timestep_fs": 1.0, "precision": precision, "rows": rows}  # fmt: skip


def nve(steps: int, report: int, precision: str, timestep_fs: float, model_path: str | None = None) -> dict:
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    pdb = app.PDBFile(os.path.join(os.path.dirname(__file__), "..", "tests", "data", "ace_ala_nme.pdb"))
    system = _potential(model_path).createSystem(pdb.topology, precision=precision)
    integrator = openmm.VerletIntegrator(timestep_fs * unit.femtosecond)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, platform, {"Threads": "1"})
    context.setPositions(pdb.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 500)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    rows, t0 = [], time.time()
    atoms = system.getNumParticles()
    for done in range(0, steps + 1, report):
        if done:
            integrator.step(report)
        state = context.getState(getEnergy=True)
        pot = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        kin = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temperature = 2 * kin / ((3 * atoms - 3) * 0.00831446261815324)
        rows.append(
            {"step": done, "time_ps": done * timestep_fs / 1000, "potential": pot, "kinetic": kin,
             "total": pot + kin, "temperature_k": temperature}
        )  # fmt: skip
    t = np.array([r["time_ps"] for r in rows])
    total = np.array([r["total"] for r in rows])
    slope = float(np.polyfit(t, total, 1)[0]) if len(t) > 1 else 0.0
    result = {
        "system": "ACE-ALA-ALA-NME, ML only, vacuum, velocity Verlet",
        "atoms": atoms,
        "steps": steps,
        "timestep_fs": timestep_fs,
        "precision": precision,
        "drift_kj_mol_per_ps": slope,
        "drift_kj_mol_per_ps_per_atom": slope / atoms,
        "total_energy_std_kj_mol": float(total.std()),
        "mean_temperature_k": float(np.mean([r["temperature_k"] for r in rows[1:]]))
        if len(rows) > 1
        else None,
        "seconds": round(time.time() - t0, 1),
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    return result


def explore(model_path: str | None, molecules: str = "all") -> dict:
    """ML-driven MD (600 K, vacuum, 400 fs) of the molecules explored by active learning round 1
    (``scripts/make_dataset.py`` part ``mlmd``, same seeds, but from AMBER-minimised starts): which
    ones break a bond. ``molecules``: ``all`` (66) or ``dipeptides`` (26)."""
    import sys

    from openmmml_e2former.data.exploration import explore_peptides

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_dataset import explored_sequences

    label = os.path.basename(model_path) if model_path else "shipped e2former-lsr"
    start = time.perf_counter()
    sequences = explored_sequences()
    if molecules == "dipeptides":
        sequences = [seq for seq in sequences if len(seq) == 1]
    _, records = explore_peptides(sequences, _potential(model_path), label)
    broken = [r for r in records if r["first_broken_frame"] is not None or not r["finite"]]
    return {
        "potential": label,
        "molecules": len(records),
        "with_broken_bond": len(broken),
        "broken": [{k: r[k] for k in ("molecule", "first_broken_frame", "broken", "finite")} for r in broken],
        "wall_s": round(time.perf_counter() - start, 1),
        "records": records,
    }


def run_folder(folder: str, skip_ps: float = 1.0) -> dict:
    """Summary of an ``e2former run`` folder's last MD stage (see the module docstring)."""
    import glob

    import mdtraj

    from openmmml_e2former.analysis.run_data import read_state_csv

    stage = sorted(glob.glob(os.path.join(folder, "stages", "*")))[-1]
    with open(os.path.join(folder, "run.json")) as handle:
        manifest = json.load(handle)
    planned = next(s for s in manifest["protocol"]["stages"] if stage.endswith("-" + s["name"]))["steps"]
    table = read_state_csv(os.path.join(stage, "state.csv"))
    step = np.asarray(table["step"])
    time_ps = np.asarray(table["time_ps"])
    temperature = np.asarray(table["temperature_K"])
    energy = np.asarray(table["potential_kj_mol"])
    with open(os.path.join(folder, "ml_region.json")) as handle:
        ml_region = json.load(handle)
    ml = set(ml_region["atoms"])
    traj = mdtraj.load_dcd(os.path.join(stage, "trajectory.dcd"), top=os.path.join(folder, "prepared.pdb"))
    pairs = np.array([(a.index, b.index) for a, b in traj.topology.bonds if a.index in ml and b.index in ml])
    start = mdtraj.load(os.path.join(folder, "prepared.pdb"))
    reference = mdtraj.compute_distances(start, pairs)[0]
    change = np.abs(mdtraj.compute_distances(traj, pairs) / reference - 1.0)
    later = time_ps >= skip_ps
    md = next(s for s in manifest["protocol"]["stages"] if stage.endswith("-" + s["name"]))
    frame_ps = md["trajectory_interval"] * md["timestep_fs"] / 1000.0
    broken = []
    for k in np.flatnonzero(change.max(axis=0) > BROKEN):
        first = int(np.argmax(change[:, k] > BROKEN))
        atoms = [str(traj.topology.atom(int(i))) for i in pairs[k]]
        broken.append({"atoms": atoms, "first_frame_ps": round((first + 1) * frame_ps, 3)})
    return {
        "folder": folder,
        "protocol": manifest["protocol"].get("name"),
        "ml_constraints_kept": ml_region.get("ml_constraints_kept"),
        "platforms": _run_platforms(folder),
        "stage": os.path.basename(stage),
        "steps_done": int(step[-1]),
        "steps_planned": int(planned),
        "time_ps": float(time_ps[-1]),
        "ml_atoms": len(ml),
        "ml_bonds": len(pairs),
        "frames": traj.n_frames,
        "finite": bool(np.isfinite(energy).all() and np.isfinite(traj.xyz).all()),
        "temperature_k_after_skip": {
            "skip_ps": skip_ps,
            "mean": float(temperature[later].mean()) if later.any() else None,
            "min": float(temperature[later].min()) if later.any() else None,
            "max": float(temperature[later].max()) if later.any() else None,
        },
        "max_bond_change": float(change.max()),
        "broken_bonds": broken,
        "broken_threshold": BROKEN,
        "max_bond_change_atoms": [
            str(traj.topology.atom(int(i))) for i in pairs[change.max(axis=0).argmax()]
        ],
        "weights_sha256": manifest.get("weights_sha256"),
    }


def locality(folder: str, model_path: str | None, radius: float) -> dict:
    """Per saved frame of a run folder and per residue: the largest difference between the forces
    the potential puts on the residue in the whole protein and in its ``radius`` neighbourhood
    (``openmmml_e2former.probes.locality_gaps``), eV/Å."""
    import torch

    from openmmml_e2former.data.exploration import run_folder_frames
    from openmmml_e2former.potential import load_network
    from openmmml_e2former.probes import locality_gaps

    torch.set_num_threads(2)
    model, _ = load_network(model_path)
    top, fragments, frames, stage, _ = run_folder_frames(folder)
    names = [f"{r.name}{r.index + 1}" for r in top.residues()]
    rows = []
    for k, frame in enumerate(frames):
        gaps = locality_gaps(model, top, frame, fragments, radius)
        worst = np.argsort(gaps)[::-1][:3]
        rows.append({"frame": k, "median": float(np.median(gaps)), "gaps": gaps.round(3).tolist()})
        print(
            f"frame {k}: median {np.median(gaps):.3f} eV/Å, worst "
            + ", ".join(f"{names[i]} {gaps[i]:.2f}" for i in worst)
        )
    return {"folder": folder, "stage": stage, "radius_A": radius, "residues": names, "frames": rows}


def _run_platforms(folder: str) -> list[str] | None:
    """The OpenMM platforms of a run's pieces (``sessions.json``; None for folders older than it)."""
    path = os.path.join(folder, "sessions.json")
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return sorted({s["platform"] for s in json.load(handle)})


def _write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as handle:
        json.dump(data, handle, indent=1)
    os.replace(path + ".tmp", path)


def _weights_name(model_path: str | None) -> str:
    return os.path.splitext(os.path.basename(model_path))[0] if model_path else "shipped"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("which", choices=["villin", "nve", "run-folder", "explore", "locality"])
    parser.add_argument("folder", nargs="?", help="run-folder, locality: the e2former run folder")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--report", type=int, default=50)
    parser.add_argument("--precision", default="single", choices=["single", "double"])
    parser.add_argument("--timestep-fs", type=float, default=0.5)
    parser.add_argument("--out", default="runs/stability")
    parser.add_argument("--model-path", default=None, help="checkpoint (default: the shipped potential)")
    parser.add_argument(
        "--guard-stop", default=None, help="run-folder: the message of the bond guard that stopped the run"
    )
    parser.add_argument("--molecules", default="all", choices=["all", "dipeptides"], help="explore: which")
    parser.add_argument("--radius", type=float, default=6.0, help="locality: neighbourhood radius (Å)")
    args = parser.parse_args()
    if args.folder:
        unpack_for(args.folder)  # stability/ run records keep their frames packed
    name = _weights_name(args.model_path)
    run_name = os.path.basename(os.path.normpath(args.folder or ""))
    if args.which == "locality":
        result = locality(args.folder, args.model_path, args.radius)
        result["weights_sha256"] = weights_sha256(args.model_path)
        path = os.path.join(args.out, f"locality-{run_name}-{name}.json")
    elif args.which == "run-folder":
        result = run_folder(args.folder)
        result["command"] = f"python scripts/stability.py run-folder {args.folder}"
        if args.guard_stop:
            result["guard_stop"] = args.guard_stop
        _write_json(os.path.join(args.folder, "stability-summary.json"), result)
        print(json.dumps(result, indent=1))
        return
    elif args.which == "explore":
        result = explore(args.model_path, args.molecules)
        result["weights_sha256"] = weights_sha256(args.model_path)
        path = os.path.join(args.out, f"explore-{args.molecules}-{name}.json")
        result["command"] = f"python scripts/stability.py explore --molecules {args.molecules}" + (
            f" --model-path {args.model_path}" if args.model_path else ""
        )
        print(f"{result['with_broken_bond']} of {result['molecules']} molecules broke a bond")
    else:
        if args.which == "villin":
            result = villin(args.steps, args.report, args.precision, args.model_path)
        else:
            result = nve(args.steps, args.report, args.precision, args.timestep_fs, args.model_path)
        result["command"] = (
            f"python scripts/stability.py {args.which} --steps {args.steps} --precision {args.precision}"
        )
        result["weights_sha256"] = weights_sha256(args.model_path)
        path = os.path.join(args.out, f"{args.which}-{args.precision}.json")
    _write_json(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

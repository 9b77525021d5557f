"""Run a protocol: prepare, build the ML/MM system, run the stages, resume after a kill.

Run folder layout (``run_protocol(..., folder)``)::

    run.json            protocol, structure checksum, ML selection, potential used
    sessions.json       each start/resume: time, OpenMM platform, host, OpenMM and PyTorch versions
    prepare.json/.txt   what preparation changed;  prepared.pdb   the solvated start
    ml_region.json      the ML atoms, their fragments and charge
    system.xml          the ML/MM system (without stage restraints/barostat)
    stages/NN-name/     per stage: state.csv, trajectory.dcd, checkpoint.chk,
                        state.xml, final.pdb, done.json (written last)
    final.pdb, final.cif, state.xml   the end of the last stage
    timings.json        wall time and ns/day of each stage

Stages with ``done.json`` are never repeated; an unfinished MD stage resumes from its
checkpoint after its outputs are trimmed to that checkpoint (``restart.py``).
"""

from __future__ import annotations

import collections
import copy
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import restart
from .protocol import Protocol, with_ligand_words
from .reporters import BondWatch, GuardReporter, ProgressReporter, SimulationError, state_problem


def say(message: str) -> None:
    print(f"[e2former run] {message}", flush=True)


@dataclass
class RunContext:
    """What every stage needs: the prepared topology, the systems and the platform."""

    folder: str
    protocol: Protocol
    topology: object
    positions_nm: np.ndarray
    mm_system: object
    system: object
    platform: object
    dof: int
    progress: bool
    ml_atoms: list = field(default_factory=list)
    bonds: dict = field(default_factory=dict)  # the run's BondWatch, once made (see bond_watch)


def stage_dirs(folder: str, protocol: Protocol) -> list[str]:
    return [os.path.join(folder, "stages", f"{i + 1:02d}-{s['name']}") for i, s in enumerate(protocol.stages)]


def run_protocol(
    protocol: Protocol,
    structure: str,
    folder: str,
    ml_selection: str | None = None,
    overwrite: bool = False,
    platform: str | None = None,
    progress: bool = True,
) -> dict:
    """Run (or resume) every stage of ``protocol`` on ``structure``; return the timings dict.

    Args:
        protocol: from :func:`load_protocol`.
        structure: PDB/mmCIF file.
        folder: run folder (created; an existing run with the same inputs is resumed).
        ml_selection: mdtraj selection of the ML region ("none" = pure MM); default: the protocol's.
        overwrite: delete an existing run in ``folder`` and start again.
        platform: OpenMM platform name (default: the protocol's, "auto" = fastest).
    """
    if not os.path.isfile(structure):
        raise FileNotFoundError(f"structure file not found: {structure}")
    selection = ml_selection if ml_selection is not None else protocol.ml["selection"]
    protocol, selection = with_ligand_words(protocol, selection)
    manifest = {
        "protocol": protocol.to_dict(),
        "structure": os.path.abspath(structure),
        "structure_sha256": restart.file_sha256(structure),
        "ml_selection": selection,
        "random_weights": _uses_random_weights(protocol, selection),
        "weights_sha256": _weights_digest(protocol, selection),
    }
    check_ligand_input(protocol, structure, selection)
    resumed = restart.open_run_folder(folder, manifest, overwrite)
    say(f"{'resuming' if resumed else 'starting'} protocol {protocol.name!r} in {folder}")
    if resumed and "weights_sha256" not in restart.read_json(os.path.join(folder, restart.MANIFEST)):
        say(
            "warning: this run folder predates weight checksums, so resuming cannot check that the "
            "potential's weights are unchanged; if they changed, start again with --overwrite"
        )
    ctx = build_run(protocol, structure, folder, selection, platform or protocol.platform, progress)
    timings = {}
    previous = None
    for stage, directory in zip(protocol.stages, stage_dirs(folder, protocol), strict=True):
        timings[stage["name"]] = run_stage(ctx, stage, directory, previous)
        previous = (stage, directory)
    finish_run(ctx, previous[1], timings)
    return timings


def _uses_random_weights(protocol: Protocol, selection: str) -> bool:
    from .selection import NONE_WORDS
    from .system import resolve_potential

    return str(selection).strip().lower() not in NONE_WORDS and resolve_potential(protocol.potential)[2]


def _weights_digest(protocol: Protocol, selection: str) -> str | None:
    """SHA-256 of the weights file the ML region will use (None for pure MM or a random network),
    so a run is never resumed with other weights (e.g. after the shipped potential changed)."""
    from ..potential import default_weights
    from ..weights import resolve_weights
    from .selection import NONE_WORDS
    from .system import resolve_potential

    name, kwargs, random = resolve_potential(protocol.potential)
    if random or str(selection).strip().lower() in NONE_WORDS:
        return None
    path = resolve_weights(str(kwargs["modelPath"])) if kwargs.get("modelPath") else default_weights(name)
    return restart.file_sha256(str(path))


def build_run(protocol, structure, folder, selection, platform_name, progress) -> RunContext:
    """Prepare (once), then build the MM and ML/MM systems; all input checks happen here."""
    import openmm
    import openmm.app as app

    from .selection import NONE_WORDS, format_ml_summary, ml_region_summary, select_atoms
    from .system import (
        RANDOM_WARNING,
        build_mixed_system,
        build_mm_system,
        choose_platform,
        degrees_of_freedom,
        keep_ml_constraints,
        resolve_potential,
    )

    prepared = os.path.join(folder, "prepared.pdb")
    has_ml = str(selection).strip().lower() not in NONE_WORDS
    if not os.path.isfile(prepared):
        say(f"preparing {structure} (pdbfixer: heterogens, missing atoms, hydrogens; solvent and ions)")
    forcefield, lines = prepare_into(folder, protocol, structure, has_ml)
    for line in lines:
        say("  " + line)
    pdb = app.PDBFile(prepared)
    mm_system = build_mm_system(forcefield, pdb.topology, protocol.system)
    positions = np.array(pdb.getPositions(asNumpy=True)._value)
    ml_atoms = select_atoms(pdb.topology, selection, what="ML selection", positions_nm=positions)
    _, _, random = resolve_potential(protocol.potential)
    if ml_atoms and random:
        say(RANDOM_WARNING)
    keep = keep_ml_constraints(protocol.system["ml_constraints"])
    if ml_atoms:
        say(
            f"potential {protocol.potential['name']!r} ({'random' if random else 'trained'} weights); "
            f"X-H constraints inside the ML region: {'kept' if keep else 'removed (flexible)'}"
        )
    metadata = {}
    system = build_mixed_system(pdb.topology, mm_system, ml_atoms, protocol.potential, keep, metadata)
    summary = ml_region_summary(pdb.topology, ml_atoms, mm_system, protocol.potential, metadata)
    say(format_ml_summary(selection, summary))
    ligand = protocol.ligand.get("resname")
    if ligand:
        summary["ligand"] = ligand_fragments(pdb.topology, ml_atoms, ligand, protocol.potential, metadata)
        say(summary["ligand"]["text"])
    ml_record = {
        "selection": selection,
        "atoms": ml_atoms,
        "summary": summary,
        "random_weights": random,
        "ml_constraints_kept": keep,
        "potential": protocol.potential,
        "ligand": ligand or None,
    }
    restart.atomic_write_json(os.path.join(folder, "ml_region.json"), ml_record)
    system_xml = os.path.join(folder, "system.xml")
    if not os.path.isfile(system_xml):
        restart.atomic_write_text(system_xml, openmm.XmlSerializer.serialize(system))
    chosen = choose_platform(platform_name)
    say(f"{pdb.topology.getNumAtoms()} atoms, OpenMM platform {chosen.getName()}")
    restart.record_session(folder, chosen.getName())
    return RunContext(
        folder,
        protocol,
        pdb.topology,
        positions,
        mm_system,
        system,
        chosen,
        degrees_of_freedom(system),
        progress,
        ml_atoms,
    )


def prepare_into(folder: str, protocol: Protocol, structure: str, has_ml: bool) -> tuple:
    """Prepare ``structure`` into ``folder`` (``prepared.pdb``, ``prepare.json``/``.txt``, the
    ligand's ``ligand/``) unless ``prepared.pdb`` is there already; return the force field (with
    the ligand's template) and the report's lines (the ligand's alone when nothing was prepared;
    the report already holds it otherwise)."""
    from .prepare import format_report, prepare_structure
    from .system import forcefield_files, load_forcefield, resolve_min_box

    ligand = _prepare_ligand(protocol, structure, folder)
    files = forcefield_files(protocol.system, protocol.prepare["water_model"])
    forcefield = load_forcefield(files + ([ligand.xml_path] if ligand else []))
    if os.path.isfile(os.path.join(folder, "prepared.pdb")):  # resumed: the ligand's line only
        return forcefield, [ligand.summary()] if ligand else []
    options = resolve_min_box(protocol.prepare, protocol.potential, has_ml)
    name = protocol.ligand.get("resname")
    if name and ligand is None:  # a ligand without template: kept as it is, its XML in the force field
        options = {**options, "keep_heterogens": [*(options["keep_heterogens"] or []), name]}
    topology, positions, report = prepare_structure(structure, options, forcefield, ligand)
    lines = format_report(report)
    restart.atomic_write_json(os.path.join(folder, "prepare.json"), report)
    restart.atomic_write_text(os.path.join(folder, "prepare.txt"), "\n".join(lines) + "\n")
    _write_pdb(os.path.join(folder, "prepared.pdb"), topology, positions)
    return forcefield, lines


def check_ligand_input(protocol: Protocol, structure: str, selection: str) -> None:
    """Everything about the protocol's ligand that can be refused from the input alone — the
    residue, the template, their match, the elements the potential lacks when the ML selection
    takes ligand atoms — before the run folder is touched (a corrected rerun then starts cleanly)."""
    from .ligand import LigandSpec, check_elements, ligand_in_selection, protonate_input
    from .system import resolve_potential

    spec = LigandSpec.from_options(protocol.ligand)
    if spec is None:
        return
    mol = protonate_input(structure, spec)
    if mol is not None and ligand_in_selection(structure, spec.resname, selection):
        from ..potential import model_elements

        name, kwargs, _ = resolve_potential(protocol.potential)
        check_elements(mol, spec.resname, model_elements(name, **kwargs), name)


def _prepare_ligand(protocol: Protocol, structure: str, folder: str):
    """The protocol's ligand protonated and parameterised (once; ``<run>/ligand/``)."""
    from .ligand import LigandSpec, prepare_ligand

    spec = LigandSpec.from_options(protocol.ligand)
    if spec is None or not spec.has_template:
        return None
    return prepare_ligand(structure, spec, folder)


def ligand_fragments(topology, ml_atoms, resname: str, potential: dict, metadata: dict) -> dict:
    """How the ligand's ML atoms are split into fragments (the rule depends on the weights:
    docs/fragments.md), for the run log and ``ml_region.json``."""
    from .selection import ml_fragment_ids

    ids = ml_fragment_ids(topology, ml_atoms, potential, metadata)
    atoms = list(topology.atoms())
    mine = [f for i, f in zip(ml_atoms, ids, strict=True) if atoms[i].residue.name == resname]
    if not mine:
        return {"n_atoms": 0, "text": f"ligand {resname}: not in the ML region (classical)"}
    sizes = sorted(collections.Counter(mine).values(), reverse=True)
    rule = "BRICS pieces" if len(sizes) > 1 else "one fragment"
    return {
        "n_atoms": len(mine),
        "fragment_sizes": sizes,
        "text": f"ligand {resname}: {len(mine)} ML atoms in {len(sizes)} fragment(s) ({rule}; sizes {sizes})",
    }


def run_stage(ctx: RunContext, stage: dict, directory: str, previous) -> dict:
    done = os.path.join(directory, "done.json")
    if os.path.isfile(done):
        say(f"stage {stage['name']!r}: already finished, skipped")
        return restart.read_json(done)
    os.makedirs(directory, exist_ok=True)
    start_state = _start_state(ctx, previous)
    if stage["type"] == "minimize":
        record = run_minimization(ctx, stage, directory, start_state)
    else:
        record = run_md(ctx, stage, directory, start_state, previous)
    restart.atomic_write_json(done, record)
    return record


def _start_state(ctx: RunContext, previous):
    """The State the stage starts from: the previous stage's ``state.xml``, else the prepared structure."""
    import openmm

    if previous is None:
        return None
    with open(os.path.join(previous[1], "state.xml")) as handle:
        return openmm.XmlSerializer.deserialize(handle.read())


def _stage_system(ctx: RunContext, stage: dict, reference_nm, base=None) -> tuple:
    from .system import add_barostat, add_restraints

    system = copy.deepcopy(base if base is not None else ctx.system)
    names = add_restraints(system, ctx.topology, reference_nm, stage["restraints"])
    if stage.get("ensemble") == "npt":
        add_barostat(
            system, float(stage["pressure_bar"]), stage["temperature_K"][0], stage["barostat_interval"]
        )
    return system, names


def _apply_start_state(context, ctx: RunContext, state) -> None:
    if state is None:
        context.setPositions(ctx.positions_nm)
        return
    context.setPeriodicBoxVectors(*state.getPeriodicBoxVectors())
    context.setPositions(state.getPositions())
    context.setVelocities(state.getVelocities())
    context.setTime(state.getTime())


def _reference_positions(ctx: RunContext, state) -> np.ndarray:
    return ctx.positions_nm if state is None else np.array(state.getPositions(asNumpy=True)._value)


def run_minimization(ctx: RunContext, stage: dict, directory: str, start_state) -> dict:
    """Local energy minimisation with the ML/MM (``forces: mixed``) or the MM-only system."""
    import openmm
    import openmm.unit as unit

    base = ctx.mm_system if stage["forces"] == "mm" else ctx.system
    system, _ = _stage_system(ctx, stage, _reference_positions(ctx, start_state), base)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), ctx.platform)
    _apply_start_state(context, ctx, start_state)
    before = _energy(context)
    say(
        f"stage {stage['name']!r}: minimising ({stage['forces']} forces, at most "
        f"{stage['max_iterations']} iterations), E = {before:.1f} kJ/mol"
    )
    started = time.perf_counter()
    openmm.LocalEnergyMinimizer.minimize(
        context,
        float(stage["tolerance_kj_mol_nm"]) * unit.kilojoule_per_mole / unit.nanometer,
        int(stage["max_iterations"]),
    )
    wall = time.perf_counter() - started
    after = _energy(context)
    state = context.getState(getPositions=True, getVelocities=True, getEnergy=True, enforcePeriodicBox=True)
    problem = state_problem(state, ctx.dof, float("inf"))
    watch = bond_watch(ctx)
    if not problem and watch is not None:
        problem = watch.problem(state)  # stop: the message; warn: printed, None
    if problem:
        raise SimulationError(f"stage {stage['name']!r} (minimisation) failed: {problem}")
    _write_stage_end(ctx, directory, state)
    say(f"stage {stage['name']!r}: E {before:.1f} -> {after:.1f} kJ/mol in {wall:.1f} s")
    return {"type": "minimize", "energy_before_kj_mol": before, "energy_after_kj_mol": after, "wall_s": wall}


def _energy(context) -> float:
    import openmm.unit as unit

    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def run_md(ctx: RunContext, stage: dict, directory: str, start_state, previous) -> dict:
    """Langevin MD with tapered restraints, a temperature ramp and checkpoints."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    system, names = _stage_system(ctx, stage, _reference_positions(ctx, start_state))
    t0 = stage["temperature_K"][0]
    integrator = openmm.LangevinMiddleIntegrator(
        t0 * unit.kelvin,
        float(stage["friction_per_ps"]) / unit.picosecond,
        float(stage["timestep_fs"]) * unit.femtosecond,
    )
    seed = stage_seed(ctx.protocol, stage)
    if seed is not None:
        integrator.setRandomNumberSeed(seed)
    simulation = app.Simulation(ctx.topology, system, integrator, ctx.platform)
    checkpoint = os.path.join(directory, "checkpoint.chk")
    start_step = _resume_or_start(ctx, simulation, stage, directory, checkpoint, start_state, previous)
    say(
        f"stage {stage['name']!r}: {stage['ensemble'].upper()} {stage['steps']} steps "
        f"x {stage['timestep_fs']} fs, "
        f"T {t0:g}->{stage['temperature_K'][1]:g} K"
        + (f", {len(names)} restraint group(s)" if names else "")
        + (f" (resuming at step {start_step})" if start_step else "")
    )
    reporters = _md_reporters(ctx, stage, directory, start_step, system)
    simulation.reporters.extend(reporters)
    started = time.perf_counter()
    try:
        _md_loop(ctx, simulation, stage, names, start_step, checkpoint)
    finally:
        reporters[-1].close()
        for reporter in reporters[1:-1]:
            handle = getattr(reporter, "_out", None)  # DCD and CSV reporters keep a file open
            if handle is not None:
                handle.close()
    wall = time.perf_counter() - started
    state = simulation.context.getState(
        getPositions=True, getVelocities=True, getEnergy=True, enforcePeriodicBox=True
    )
    _write_stage_end(ctx, directory, state)
    steps_run = stage["steps"] - start_step
    ns_day = steps_run * float(stage["timestep_fs"]) * 1e-6 / wall * 86400 if wall > 0 else 0.0
    say(f"stage {stage['name']!r}: {steps_run} steps in {wall:.1f} s ({ns_day:.3g} ns/day)")
    return {
        "type": "md",
        "steps": stage["steps"],
        "steps_timed": steps_run,
        "wall_s": wall,
        "ns_per_day": ns_day,
        "timestep_fs": float(stage["timestep_fs"]),
    }


def stage_seed(protocol: Protocol, stage: dict) -> int | None:
    """Random seed of a stage (Langevin noise, initial velocities): ``random_seed + i`` for the
    i-th stage (0-based), or None (OpenMM picks a new one) when the protocol's is null."""
    if protocol.random_seed is None:
        return None
    return int(protocol.random_seed) + [s["name"] for s in protocol.stages].index(stage["name"])


def _resume_or_start(ctx, simulation, stage, directory, checkpoint, start_state, previous) -> int:
    """Load the stage checkpoint and trim outputs to it, or set the start state; return the step."""
    import openmm.unit as unit

    if os.path.isfile(checkpoint):
        try:
            simulation.loadCheckpoint(checkpoint)
        except Exception as exc:
            raise ValueError(
                f"cannot load {checkpoint} ({exc}); a checkpoint only loads on the platform and OpenMM "
                "version that wrote it: use the same --platform, or --overwrite"
            ) from None
        step = simulation.currentStep
        _trim_outputs(stage, directory, step)
        return step
    for name in ("trajectory.dcd", "trajectory.xtc", "state.csv"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            os.remove(path)  # written before any checkpoint of this stage: nothing to keep
    _apply_start_state(simulation.context, ctx, start_state)
    if _new_velocities(stage, previous):
        temperature = stage["temperature_K"][0] * unit.kelvin
        seed = stage_seed(ctx.protocol, stage)
        if seed is None:
            simulation.context.setVelocitiesToTemperature(temperature)
        else:
            simulation.context.setVelocitiesToTemperature(temperature, seed)
    simulation.currentStep = 0
    # the kinetic energy of a leapfrog integrator before its first step is an estimate from
    # the forces, so the start is only checked for finite numbers and bonds, not for its temperature
    _save_checkpoint(ctx, simulation, stage, checkpoint, max_temperature_k=float("inf"))
    return 0


def _new_velocities(stage: dict, previous) -> bool:
    mode = str(stage["initial_velocities"]).lower()
    if mode != "auto":
        return mode == "true"
    return previous is None or previous[0]["type"] == "minimize"


def _trim_outputs(stage: dict, directory: str, step: int) -> None:
    trajectory = os.path.join(directory, f"trajectory.{stage['trajectory_format']}")
    frames = step // stage["trajectory_interval"]
    csv = os.path.join(directory, "state.csv")
    rows = step // stage["report_interval"]
    for path, keep in ((trajectory, frames), (csv, rows)):
        if os.path.exists(path) and keep == 0:
            os.remove(path)  # nothing before the checkpoint: start the file afresh (with its header)
    if os.path.exists(trajectory):
        if stage["trajectory_format"] == "dcd":
            restart.trim_dcd(trajectory, frames)
        else:
            restart.trim_xtc(trajectory, frames)
    elif frames:
        raise ValueError(f"{trajectory} is missing but the checkpoint at step {step} implies {frames} frames")
    if os.path.exists(csv):
        restart.trim_csv(csv, rows)


def _md_reporters(ctx, stage, directory, start_step, system) -> list:
    import openmm.app as app

    trajectory = os.path.join(directory, f"trajectory.{stage['trajectory_format']}")
    csv = os.path.join(directory, "state.csv")
    writer = app.DCDReporter if stage["trajectory_format"] == "dcd" else app.XTCReporter
    guard = GuardReporter(
        _gcd(stage["report_interval"], stage["trajectory_interval"]),
        stage["name"],
        ctx.dof,
        float(ctx.protocol.guard["max_temperature_K"]),
        bond_watch(ctx),
    )
    traj = writer(trajectory, stage["trajectory_interval"], append=os.path.exists(trajectory))
    state = app.StateDataReporter(
        csv,
        stage["report_interval"],
        step=True,
        time=True,
        potentialEnergy=True,
        kineticEnergy=True,
        totalEnergy=True,
        temperature=True,
        volume=True,
        density=True,
        speed=True,
        append=os.path.exists(csv),
        systemMass=None,
    )
    progress = ProgressReporter(
        stage["name"], stage["steps"], start_step, float(stage["timestep_fs"]), ctx.dof, enabled=ctx.progress
    )
    return [guard, traj, state, progress]


def bond_watch(ctx: RunContext):
    """The :class:`BondWatch` of the ML region (None without one, or with ``guard.max_bond_change: null``)."""
    limit = ctx.protocol.guard["max_bond_change"]
    if not ctx.ml_atoms or limit is None:
        return None
    if "watch" not in ctx.bonds:  # one per run, so that 'warn' reports each bond once
        ctx.bonds["watch"] = BondWatch(
            ctx.topology,
            ctx.ml_atoms,
            ctx.positions_nm,
            float(limit),
            ctx.protocol.guard["on_bond_change"],
            say,
        )
    return ctx.bonds["watch"]


def _gcd(a: int, b: int) -> int:
    import math

    return math.gcd(int(a), int(b))


def _md_loop(ctx, simulation, stage, names, start_step, checkpoint) -> None:
    """Step in chunks; update temperature and restraints between chunks; checkpoint on schedule."""
    import openmm

    total = stage["steps"]
    chunk = int(stage["schedule_interval"] or max(1, total // 20))
    every = stage["checkpoint_interval"]
    step = start_step
    while step < total:
        _apply_schedule(simulation, stage, names, step, chunk)
        target = min(total, _next_multiple(step, chunk), _next_multiple(step, every))
        try:
            simulation.step(target - step)
        except openmm.OpenMMException as exc:
            raise SimulationError(
                f"stage {stage['name']!r} blew up between steps {step} and {target}: {exc}"
                + _last_good(checkpoint)
            ) from None
        except SimulationError as exc:
            raise SimulationError(f"{exc}{_last_good(checkpoint)}") from None
        step = target
        if step % every == 0 or step == total:
            _save_checkpoint(ctx, simulation, stage, checkpoint)


def _last_good(checkpoint: str) -> str:
    """Where the last good checkpoint is (and its step), for error messages."""
    if not os.path.isfile(checkpoint):
        return "; no checkpoint was written"
    return f"; last good checkpoint: {checkpoint} (frames and CSV rows up to it are kept)"


def _next_multiple(step: int, interval: int) -> int:
    return (step // interval + 1) * interval


def _fraction(step: int, total: int, chunk: int) -> float:
    """Ramp position of the chunk starting at ``step``: 0 for the first chunk, 1 for the last."""
    last = max(total - chunk, 1)
    return min(1.0, step / last)


def _apply_schedule(simulation, stage, names, step, chunk) -> None:
    import openmm

    f = _fraction(step, stage["steps"], chunk)
    t0, t1 = stage["temperature_K"]
    temperature = t0 + (t1 - t0) * f
    simulation.integrator.setTemperature(temperature)
    if stage["ensemble"] == "npt":
        simulation.context.setParameter(openmm.MonteCarloBarostat.Temperature(), temperature)
    for name, item in zip(names, stage["restraints"], strict=True):
        k0, k1 = item["k_kj_mol_nm2"], item["k_end_kj_mol_nm2"]
        simulation.context.setParameter(name, k0 + (k1 - k0) * f)


def _save_checkpoint(ctx, simulation, stage, checkpoint, max_temperature_k=None) -> None:
    """Checkpoint only a healthy state (with ``guard.on_bond_change: stop``, no broken ML bond),
    through a temporary file and ``os.replace``."""
    state = simulation.context.getState(getEnergy=True, getPositions=True)
    limit = float(ctx.protocol.guard["max_temperature_K"]) if max_temperature_k is None else max_temperature_k
    problem = state_problem(state, ctx.dof, limit)
    watch = bond_watch(ctx) if not problem else None
    if watch is not None and watch.action == "stop":
        problem = watch.problem(state)
    if problem:
        raise SimulationError(
            f"stage {stage['name']!r} blew up at step {simulation.currentStep}: {problem}"
            + _last_good(checkpoint)
        )
    tmp = checkpoint + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(simulation.context.createCheckpoint())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, checkpoint)


def _write_stage_end(ctx: RunContext, directory: str, state) -> None:
    import openmm

    restart.atomic_write_text(os.path.join(directory, "state.xml"), openmm.XmlSerializer.serialize(state))
    _write_pdb(
        os.path.join(directory, "final.pdb"),
        ctx.topology,
        state.getPositions(),
        state.getPeriodicBoxVectors(),
    )


def _write_pdb(path: str, topology, positions, box=None) -> None:
    import openmm.app as app

    if box is not None:
        topology = copy.copy(topology)
        topology.setPeriodicBoxVectors(box)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        app.PDBFile.writeFile(topology, positions, handle, keepIds=True)
    os.replace(tmp, path)


def finish_run(ctx: RunContext, last_dir: str, timings: dict) -> None:
    import openmm
    import openmm.app as app

    with open(os.path.join(last_dir, "state.xml")) as handle:
        state = openmm.XmlSerializer.deserialize(handle.read())
    shutil.copyfile(os.path.join(last_dir, "state.xml"), os.path.join(ctx.folder, "state.xml.tmp"))
    os.replace(os.path.join(ctx.folder, "state.xml.tmp"), os.path.join(ctx.folder, "state.xml"))
    _write_pdb(
        os.path.join(ctx.folder, "final.pdb"),
        ctx.topology,
        state.getPositions(),
        state.getPeriodicBoxVectors(),
    )
    topology = copy.copy(ctx.topology)
    topology.setPeriodicBoxVectors(state.getPeriodicBoxVectors())
    tmp = os.path.join(ctx.folder, "final.cif.tmp")
    with open(tmp, "w") as handle:
        app.PDBxFile.writeFile(topology, state.getPositions(), handle)
    os.replace(tmp, os.path.join(ctx.folder, "final.cif"))
    restart.atomic_write_json(os.path.join(ctx.folder, "timings.json"), timings)
    say(
        f"done: {ctx.folder}/final.pdb, final.cif, state.xml, system.xml; "
        f"per-stage outputs in {ctx.folder}/stages"
    )
    sys.stdout.flush()

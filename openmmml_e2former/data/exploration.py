"""Active learning: structures where an ML potential's own dynamics go.

Classical MD (see :mod:`.generators`) never visits the configurations a trained potential wrongly
favours, so such holes in the learned surface are found by running the potential itself and
labelling what it visits. Two sources: short ML-driven MD of small molecules
(:func:`explore_molecule`), and windows cut from the saved frames of an ``e2former run`` folder
(:func:`run_folder_windows`). A bond whose length changes by more than :data:`BROKEN` (relative to
the starting structure) counts as broken; the exploration reports such events.
"""

from __future__ import annotations

import os

import numpy as np

from ..bonds import BROKEN, bond_change, bond_lengths, bond_pairs
from ..chemistry import formal_charge, is_water_or_ion
from .cutting import atomic_numbers, environment_structures, protein_only, window_structures
from .structure import Structure


def broken_bonds(topology, positions: np.ndarray, reference_positions: np.ndarray, pairs=None) -> list[str]:
    """Names (``"RES1-A - RES2-B"``) of the bonds changed by more than :data:`BROKEN`."""
    pairs = bond_pairs(topology) if pairs is None else pairs
    if not len(pairs):
        return []
    ref = bond_lengths(reference_positions, pairs)
    atoms = list(topology.atoms())
    return [
        f"{_atom_name(atoms[i])} - {_atom_name(atoms[j])}"
        for i, j in pairs[bond_change(positions, pairs, ref) > BROKEN]
    ]


def _atom_name(atom) -> str:
    return f"{atom.residue.name}{atom.residue.id}-{atom.name}"


def ml_md(
    potential,
    topology,
    positions: np.ndarray,
    num_frames: int,
    interval: int,
    temperature: float = 500.0,
    timestep_fs: float = 1.0,
    seed: int = 0,
    charge: int = 0,
) -> tuple[list[np.ndarray], dict]:
    """Frames (Å) of Langevin MD driven by ``potential`` (an ``openmmml.MLPotential``) in vacuum.

    Starts from ``positions`` (Å) as given (an ML minimisation costs hundreds of force
    evaluations here and is not needed to explore: the thermostat absorbs the initial strain).
    The run stops early when the energy or positions stop being finite. Returns the frames and
    a record: steps run, the first frame with a broken bond (``None`` if none) and those bonds."""
    import openmm
    import openmm.unit as unit

    system = potential.createSystem(topology, charge=charge)
    integrator = openmm.LangevinMiddleIntegrator(
        temperature * unit.kelvin, 5.0 / unit.picosecond, timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions * 0.1)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, seed + 1)
    pairs = bond_pairs(topology)
    frames, record = [], {"steps": 0, "first_broken_frame": None, "broken": [], "finite": True}
    for k in range(num_frames):
        integrator.step(interval)
        record["steps"] += interval
        state = context.getState(getPositions=True, getEnergy=True)
        frame = np.array(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
        if not (np.isfinite(frame).all() and np.isfinite(state.getPotentialEnergy()._value)):
            record["finite"] = False
            break
        frames.append(frame)
        broken = broken_bonds(topology, frame, positions, pairs)
        if broken and record["first_broken_frame"] is None:
            record.update(first_broken_frame=k, broken=broken)
    return frames, record


def explore_molecule(
    potential,
    topology,
    positions: np.ndarray,
    name: str,
    charge: int,
    num_frames: int = 20,
    interval: int = 20,
    temperature: float = 500.0,
    timestep_fs: float = 1.0,
    seed: int = 0,
    label: str = "e2former-lsr",
) -> tuple[list[Structure], dict]:
    """Unlabelled structures of ML-driven MD of one molecule (``molecule`` = ``name``, so the split
    keeps them with the molecule's other conformers) and the run's record (see :func:`ml_md`)."""
    from ..fragments import fragment_ids_from_topology

    frames, record = ml_md(
        potential, topology, positions, num_frames, interval, temperature, timestep_fs, seed, charge
    )
    numbers = atomic_numbers(topology)
    fragments = fragment_ids_from_topology(topology)
    source = f"ML-driven MD ({label}), vacuum, {temperature:g} K, {timestep_fs:g} fs"
    out = [
        Structure(
            id=f"{name}/mlmd{int(temperature)}/{k}",
            molecule=name,
            numbers=numbers,
            positions=frame,
            fragment_ids=fragments,
            charge=charge,
            source=source,
        )
        for k, frame in enumerate(frames)
    ]
    record.update(molecule=name, atoms=len(numbers), frames=len(frames))
    return out, record


def explore_peptides(
    sequences: list[list[str]],
    potential,
    label: str,
    records_path: str | None = None,
    temperature: float = 600.0,
    seed: int = 0,
    mm_minimize: bool = True,
    caps: bool = True,
) -> tuple[list[Structure], list[dict]]:
    """:func:`explore_molecule` for the capped peptides ACE-sequence-NME (``caps=False``: the
    zwitterions NH3+-sequence-COO-), built in an extended conformation; with ``mm_minimize`` first
    relaxed with AMBER14 in vacuum — the builder's proline ring is strained, ~1e4 kJ/mol), molecule
    k with seed ``seed + k``. Each run's record is printed and, with ``records_path``, appended to
    that JSON-lines file as soon as it is done."""
    import json

    from .peptides import build_peptide, peptide_name
    from .sampling import minimized

    structures, records = [], []
    for k, seq in enumerate(sequences):
        topology, positions = build_peptide(seq, caps=caps)
        if mm_minimize:
            positions = minimized(topology, positions)
        charge = formal_charge(topology, range(topology.getNumAtoms()))
        name = peptide_name(seq, caps)
        found, record = explore_molecule(
            potential, topology, positions, name, charge, temperature=temperature, seed=seed + k, label=label
        )
        print(json.dumps(record), flush=True)
        if records_path:
            with open(records_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
        structures.extend(found)
        records.append(record)
    return structures, records


def run_folder_windows(
    folder: str,
    window: int = 3,
    name: str = "villin",
    stage: str | None = None,
    tag: str | None = None,
    stride: int = 1,
):
    """H-capped windows of ``window`` consecutive non-solvent residues (the protein; the ML region
    is not consulted) from every saved frame of an ``e2former run`` folder's MD stage (the last one
    unless ``stage`` names it), starting every ``stride`` residues. Frames are made whole across the
    periodic box first.

    Molecules are named ``{name}:{first}-{last}`` (1-based residue positions within the protein),
    the naming of :func:`.generators.villin_windows`, so both stay on the same side of a split;
    ids are ``{molecule}/{tag}/f{frame}`` with ``tag`` the folder's name unless given."""
    top, fragments, frames, stage_name, tag = run_folder_frames(folder, stage, tag)
    out = []
    for f, frame in enumerate(frames):
        source = f"window of frame {f} of {stage_name} in run folder {tag}, H-capped"
        out.extend(window_structures(top, frame, window, fragments, name, f"{tag}/f{f}", source, stride))
    return out


def run_folder_environments(
    folder: str, radius: float = 4.5, name: str = "villin", stage: str | None = None, tag: str | None = None
):
    """Spatial neighbourhoods of the protein's charged groups (:func:`.cutting.charged_centres`) in every
    saved frame of a run folder's MD stage: the residues with an atom within ``radius`` Å of the
    centre atom (one-residue gaps in the chain filled), cut bonds H-capped. Unlike windows of
    consecutive residues these hold the contacts between distant residues (a terminus and a
    side chain). Molecules ``{name}-env:{centre}``, ids ``{molecule}/{tag}/f{frame}``."""
    top, fragments, frames, stage_name, tag = run_folder_frames(folder, stage, tag)
    source = f"residues within {radius:g} A of {{centre}} in frame {{frame}} of {stage_name}"
    source += f" in run folder {tag}"
    return environment_structures(top, frames, fragments, radius, name, tag, source)


def _stage_dir(folder: str, stage: str | None) -> str:
    """The folder of a run folder's MD ``stage`` (its name, e.g. ``nvt``; the last stage if None),
    after checking that the frames are there (a committed record may still be packed)."""
    import glob

    stages = sorted(glob.glob(os.path.join(folder, "stages", "*")))
    chosen = [s for s in stages if stage is None or s.endswith("-" + stage)]
    if not chosen:
        raise ValueError(f"{folder} has no stage {stage!r} (stages: {[os.path.basename(s) for s in stages]})")
    for path in (os.path.join(folder, "prepared.pdb"), os.path.join(chosen[-1], "trajectory.dcd")):
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} is missing: a run record in stability/ keeps it in records.tar.xz "
                f"(python scripts/stability_records.py unpack {folder})"
            )
    return chosen[-1]


def run_folder_solvated_frames(folder: str, stage: str | None = None):
    """(topology with solvent, frames Å, box lengths Å) of every saved frame of an explicit-water
    run folder's MD ``stage``: water and ions kept, each molecule made whole across the box (a
    rectangular one; others raise)."""
    import mdtraj
    import openmm.app as app

    stage_dir = _stage_dir(folder, stage)
    pdb = os.path.join(folder, "prepared.pdb")
    traj = mdtraj.load_dcd(os.path.join(stage_dir, "trajectory.dcd"), top=pdb)
    if traj.unitcell_lengths is None:
        raise ValueError(f"{folder}: the trajectory has no periodic box (a solvated run is needed)")
    if not np.allclose(traj.unitcell_angles, 90.0):
        raise ValueError(f"{folder}: only rectangular boxes are supported (angles {traj.unitcell_angles[0]})")
    traj.make_molecules_whole(inplace=True)
    frames = [np.asarray(x, dtype=np.float64) * 10.0 for x in traj.xyz]
    boxes = [np.asarray(b, dtype=np.float64) * 10.0 for b in traj.unitcell_lengths]
    return app.PDBFile(pdb).topology, frames, boxes


def run_folder_frames(folder: str, stage: str | None = None, tag: str | None = None):
    """Protein topology, fragment ids and protein frames (Å, made whole) of a run folder's MD
    stage, the stage's folder name and the tag (the folder's name unless given)."""
    import mdtraj
    import openmm.app as app

    from ..fragments import fragment_ids_from_topology

    tag = tag or os.path.basename(os.path.normpath(folder))
    stage_dir = _stage_dir(folder, stage)
    pdb = app.PDBFile(os.path.join(folder, "prepared.pdb"))
    traj = mdtraj.load_dcd(
        os.path.join(stage_dir, "trajectory.dcd"), top=os.path.join(folder, "prepared.pdb")
    )
    if traj.unitcell_vectors is not None:
        traj.make_molecules_whole(inplace=True)  # OpenMM may wrap ML atoms one by one
    positions = np.array(pdb.getPositions(asNumpy=True)._value) * 10.0
    top, _ = protein_only(pdb.topology, positions)
    protein = [a.index for a in pdb.topology.atoms() if not is_water_or_ion(a.residue.name)]
    frames = [np.asarray(xyz, dtype=np.float64)[protein] * 10.0 for xyz in traj.xyz]
    return top, fragment_ids_from_topology(top), frames, os.path.basename(stage_dir), tag


def stage_frame_times(folder: str, stage: str, count: int) -> list[float]:
    """Times (ps, from the stage's start) of the ``count`` saved frames of a run folder's stage
    (its folder name, ``02-nvt``), from the protocol in ``run.json``: the first frame is written
    after one trajectory interval."""
    import json

    with open(os.path.join(folder, "run.json")) as handle:
        stages = json.load(handle)["protocol"]["stages"]
    spec = next(s for s in stages if stage.endswith("-" + s["name"]))
    step_ps = spec["trajectory_interval"] * spec["timestep_fs"] / 1000.0
    return [step_ps * (f + 1) for f in range(count)]

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
    numbers = np.array([a.element.atomic_number for a in topology.atoms()], dtype=np.int64)
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

    from .generators import _atom_charges, _formal_charge
    from .peptides import build_peptide, peptide_name
    from .sampling import minimized

    structures, records = [], []
    for k, seq in enumerate(sequences):
        topology, positions = build_peptide(seq, caps=caps)
        if mm_minimize:
            positions = minimized(topology, positions)
        charge = _formal_charge(_atom_charges(topology), range(topology.getNumAtoms()))
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
    from .generators import window_structures

    top, charges, fragments, frames, stage_name, tag = run_folder_frames(folder, stage, tag)
    out = []
    for f, frame in enumerate(frames):
        source = f"window of frame {f} of {stage_name} in run folder {tag}, H-capped"
        out.extend(
            window_structures(top, frame, window, charges, fragments, name, f"{tag}/f{f}", source, stride)
        )
    return out


def run_folder_environments(
    folder: str, radius: float = 4.5, name: str = "villin", stage: str | None = None, tag: str | None = None
):
    """Spatial neighbourhoods of the protein's charged groups (:func:`charged_centres`) in every
    saved frame of a run folder's MD stage: the residues with an atom within ``radius`` Å of the
    centre atom (one-residue gaps in the chain filled), cut bonds H-capped. Unlike windows of
    consecutive residues these hold the contacts between distant residues (a terminus and a
    side chain). Molecules ``{name}-env:{centre}``, ids ``{molecule}/{tag}/f{frame}``."""
    top, charges, fragments, frames, stage_name, tag = run_folder_frames(folder, stage, tag)
    source = f"residues within {radius:g} A of {{centre}} in frame {{frame}} of {stage_name}"
    source += f" in run folder {tag}"
    return environment_structures(top, frames, charges, fragments, radius, name, tag, source)


def environment_structures(
    topology, frames, charges, fragments, radius, name, tag, source
) -> list[Structure]:
    """The neighbourhoods of :func:`run_folder_environments` for protein ``frames`` (Å) of
    ``topology``; ``source`` is formatted with ``centre`` and ``frame`` (", H-capped" appended)."""
    from .generators import cut_structure

    residues = list(topology.residues())
    out = []
    for f, frame in enumerate(frames):
        for label, centre in charged_centres(topology):
            chosen = [residues[i] for i in neighbourhood(topology, frame, centre, radius)]
            text = source.format(centre=label, frame=f) + ", H-capped"
            molecule, where = f"{name}-env:{label}", f"{tag}/f{f}"
            out.append(cut_structure(topology, frame, chosen, charges, fragments, molecule, where, text))
    return out


#: Charged side chains: residue name -> (centre atom, hydrogens whose presence/absence makes it
#: charged). Decided from the atoms, not the name: ``addHydrogens`` keeps HIS/ASP/GLU/LYS names
#: for the HIP/ASH/GLH/LYN variants.
CHARGED_SIDE_CHAINS = {
    "LYS": ("NZ", {"HZ3"}, set()),
    "ARG": ("CZ", set(), set()),
    "ASP": ("CG", set(), {"HD2"}),
    "GLU": ("CD", set(), {"HE2"}),
    "HIS": ("CE1", {"HD1", "HE2"}, set()),
}


def charged_centres(topology) -> list[tuple[str, int]]:
    """``(label, atom index)`` of each charged group of a protein: the N-terminal N (NH3+) and
    C-terminal C (COO-) of each chain and the side-chain centre atom of each charged residue
    (:data:`CHARGED_SIDE_CHAINS`); labels ``RESn-ATOM`` with n the 1-based residue position."""
    out = []
    for chain in topology.chains():
        residues = list(chain.residues())
        for k, residue in enumerate(residues):
            names = {a.name: a.index for a in residue.atoms()}
            wanted = []
            centre, needs, lacks = CHARGED_SIDE_CHAINS.get(residue.name, (None, set(), set()))
            if centre and needs <= set(names) and not lacks & set(names):
                wanted.append(centre)
            if k == 0 and "H3" in names:
                wanted.append("N")
            if k == len(residues) - 1 and "OXT" in names:
                wanted.append("C")
            label = f"{residue.name}{residue.index + 1}"
            out += [(f"{label}-{atom}", names[atom]) for atom in wanted if atom in names]
    return out


def neighbourhood(topology, positions: np.ndarray, centre: int, radius: float) -> list[int]:
    """Indices of the residues with an atom within ``radius`` Å of atom ``centre``, plus any single
    residue of the same chain between two chosen ones (so no residue is left with two caps across a
    one-residue gap)."""
    residue_of = np.array([a.residue.index for a in topology.atoms()])
    chain_of = {r.index: r.chain.index for r in topology.residues()}
    near = np.linalg.norm(positions - positions[centre], axis=1) <= radius
    chosen = set(residue_of[near].tolist())
    chosen |= {i + 1 for i in chosen if i + 2 in chosen and chain_of[i] == chain_of[i + 2]}
    return sorted(chosen)


def run_folder_frames(folder: str, stage: str | None = None, tag: str | None = None):
    """Protein topology, AMBER14 charges, fragment ids and protein frames (Å, made whole) of a run
    folder's MD stage, the stage's folder name and the tag (the folder's name unless given)."""
    import glob

    import mdtraj
    import openmm.app as app

    from ..fragments import fragment_ids_from_topology
    from .generators import _atom_charges, _protein_only

    tag = tag or os.path.basename(os.path.normpath(folder))
    stages = sorted(glob.glob(os.path.join(folder, "stages", "*")))
    chosen = [s for s in stages if stage is None or s.endswith("-" + stage)]
    if not chosen:
        raise ValueError(f"{folder} has no stage {stage!r} (stages: {[os.path.basename(s) for s in stages]})")
    stage_dir = chosen[-1]
    pdb = app.PDBFile(os.path.join(folder, "prepared.pdb"))
    traj = mdtraj.load_dcd(
        os.path.join(stage_dir, "trajectory.dcd"), top=os.path.join(folder, "prepared.pdb")
    )
    if traj.unitcell_vectors is not None:
        traj.make_molecules_whole(inplace=True)  # OpenMM may wrap ML atoms one by one
    positions = np.array(pdb.getPositions(asNumpy=True)._value) * 10.0
    top, _ = _protein_only(pdb.topology, positions)
    protein = [a.index for a in pdb.topology.atoms() if a.residue.name not in _SOLVENT]
    frames = [np.asarray(xyz, dtype=np.float64)[protein] * 10.0 for xyz in traj.xyz]
    charges = _atom_charges(top)
    return top, charges, fragment_ids_from_topology(top), frames, os.path.basename(stage_dir), tag


_SOLVENT = ("HOH", "Cl", "Na", "NA", "CL")


def locality_gaps(model, topology, frame: np.ndarray, charges, fragments, radius: float = 6.0) -> np.ndarray:
    """For each residue of a protein frame (Å): the largest difference (eV/Å) between the forces
    ``model`` (an E2Former-LSR module) puts on the residue's atoms in the whole protein and in its
    neighbourhood alone (residues with an atom within ``radius`` Å of the residue, H-capped).

    A label-free check of how a potential extrapolates from the fragments it was trained on to a
    whole protein: the true (GFN2-xTB) forces on a residue change little when distant residues
    are cut away, so a large gap points at the long-range part of the model."""
    from ..train.batching import predict, to_sample
    from .generators import _formal_charge, _numbers, cut_window

    def forces(numbers, positions, frag, charge):
        s = Structure("x", "x", numbers, positions, frag, charge, energy=0.0, forces=0.0 * positions)
        return predict(model, [to_sample(s)])[1][0].detach().cpu().numpy().astype(np.float64)

    residues = list(topology.residues())
    total = _formal_charge(charges, range(topology.getNumAtoms()))
    full = forces(_numbers(topology), frame, fragments, total)
    gaps = np.zeros(len(residues))
    for residue in residues:
        own = [a.index for a in residue.atoms()]
        near = set()
        for atom in own:
            near |= set(neighbourhood(topology, frame, atom, radius))
        chosen = [residues[i] for i in sorted(near)]
        inside = sorted(a.index for r in chosen for a in r.atoms())
        numbers, coords, frag, charge = cut_window(topology, frame, chosen, charges, fragments)
        local = forces(numbers, coords, frag, charge)[: len(inside)]
        where = np.searchsorted(inside, own)
        gaps[residue.index] = np.abs(full[own] - local[where]).max()
    return gaps


def bond_stretch_scan(
    model,
    labeller,
    topology,
    frame: np.ndarray,
    charges,
    fragments,
    residues: list,
    moved: int,
    fixed: int,
    distances,
) -> list[dict]:
    """Energy and force along one bond, stretched in a piece of a protein frame, by ``model`` and by
    a reference ``labeller`` (e.g. GFN2-xTB): did a bond that broke in a run break because the
    potential departs from its reference, or because the reference itself does not hold it?

    ``residues`` (topology residues, H-capped as in :func:`.generators.cut_window`) is the piece.
    The side of the ``fixed``-``moved`` bond that holds atom ``moved`` (topology indices; for an
    X-H bond the hydrogen alone, for ASP's CB-CG the carboxylate) is translated rigidly along the
    ``fixed`` -> ``moved`` direction of the frame, so that the bond has each length in ``distances``
    (Å). Rows: ``distance``, ``model_energy`` and ``reference_energy`` (eV, relative to the first
    distance) and ``model_force`` / ``reference_force`` (eV/Å, the total force on the moved side
    along the stretch: positive pushes it further out)."""
    from .generators import cut_window

    inside = sorted(a.index for r in residues for a in r.atoms())
    if moved not in inside or fixed not in inside:
        raise ValueError("both atoms of the stretched bond must lie in the chosen residues")
    side = [inside.index(i) for i in bond_side(topology, moved, fixed, set(inside))]
    numbers, coords, frag, charge = cut_window(topology, frame, residues, charges, fragments)
    m, x = inside.index(moved), inside.index(fixed)
    direction = (coords[m] - coords[x]) / np.linalg.norm(coords[m] - coords[x])
    rows = []
    for d in distances:
        moved_coords = coords.copy()
        moved_coords[side] += coords[x] + d * direction - coords[m]
        energy, forces, ref_energy, ref_forces = _model_and_reference(
            model, labeller, Structure(f"stretch/{d:.3f}", "stretch", numbers, moved_coords, frag, charge)
        )
        rows.append(
            {
                "distance": float(d),
                "model_energy": energy,
                "model_force": float(forces[side].sum(axis=0) @ direction),
                "reference_energy": ref_energy,
                "reference_force": float(ref_forces[side].sum(axis=0) @ direction),
            }
        )
    return _relative_to_first(rows)


def bond_side(topology, moved: int, fixed: int, allowed: set[int]) -> list[int]:
    """Topology indices of the atoms bonded (through any path not crossing the ``fixed``-``moved``
    bond) to ``moved``, itself included: the part of the molecule a bond stretch carries along.
    A ring bond, or a side reaching outside ``allowed``, cannot be stretched this way."""
    neighbours: dict[int, set[int]] = {}
    for a, b in topology.bonds():
        neighbours.setdefault(a.index, set()).add(b.index)
        neighbours.setdefault(b.index, set()).add(a.index)
    if fixed not in neighbours.get(moved, ()):
        raise ValueError("the two atoms of the stretch are not bonded")
    side, todo = {moved}, [moved]
    while todo:
        atom = todo.pop()
        for j in neighbours[atom] - side:
            if j == fixed and atom == moved:
                continue  # the stretched bond itself
            if j == fixed:
                raise ValueError("the stretched bond lies in a ring: its two sides are connected")
            side.add(j)
            todo.append(j)
    if not side <= allowed:
        raise ValueError("the moved side of the bond reaches outside the chosen residues")
    return sorted(side)


def piece_along_frames(
    model, labeller, topology, frames, charges, fragments, residues: list, on_frame=None
) -> list[dict]:
    """Model vs reference ``labeller`` on one piece of a protein (``residues``, H-capped as in
    :func:`.generators.cut_window`) in each of ``frames`` (Å): does the potential follow its
    reference along the path a run took (an unfolding helix, say)?

    Rows: ``model_energy`` and ``reference_energy`` (eV, relative to the first frame; the
    ``*_absolute`` ones compare pieces of two runs of one protein), and the force MAE / largest
    error (eV/Å) over the piece's own atoms (the caps excluded).
    ``on_frame(row)``, if given, sees each row as it is done (absolute energies)."""
    from .generators import cut_window

    own = sum(1 for r in residues for _ in r.atoms())
    rows = []
    for f, frame in enumerate(frames):
        numbers, coords, frag, charge = cut_window(topology, frame, residues, charges, fragments)
        energy, forces, ref_energy, ref_forces = _model_and_reference(
            model, labeller, Structure(f"piece/f{f}", "piece", numbers, coords, frag, charge)
        )
        error = np.abs(forces[:own] - ref_forces[:own])
        rows.append(
            {
                "frame": f,
                "model_energy": energy,
                "reference_energy": ref_energy,
                "force_mae": float(error.mean()),
                "force_max_error": float(error.max()),
            }
        )
        if on_frame:
            on_frame(rows[-1])
    return _relative_to_first(rows, keep_absolute=True)


def _relative_to_first(rows: list[dict], keep_absolute: bool = False) -> list[dict]:
    """Model and reference energies relative to the first row (the absolute ones kept as
    ``*_absolute`` if asked)."""
    for key in ("model_energy", "reference_energy"):
        first = rows[0][key]
        for row in rows:
            if keep_absolute:
                row[key + "_absolute"] = row[key]
            row[key] -= first
    return rows


def torsion_scan(
    model, labeller, topology, positions: np.ndarray, charges, fragments, residues: list, moved, fixed, angles
) -> list[dict]:
    """Energy and torque for a twist about one bond, by ``model`` and by a reference ``labeller``:
    is the potential as stiff as its reference against, say, twisting a peptide bond out of plane?

    The side of the ``fixed``-``moved`` bond that holds ``moved`` (:func:`bond_side`; topology
    indices) is rotated rigidly about the bond axis by each of ``angles`` (degrees, right-handed
    about ``fixed`` -> ``moved``) in the H-capped piece ``residues``. Rows: ``angle``,
    ``model_energy`` / ``reference_energy`` (eV, relative to the first angle) and ``model_torque`` /
    ``reference_torque`` (eV/rad about the axis, the sum over the rotated side; minus the slope of
    the energy)."""
    from .generators import cut_window

    inside = sorted(a.index for r in residues for a in r.atoms())
    if moved not in inside or fixed not in inside:
        raise ValueError("both atoms of the twisted bond must lie in the chosen residues")
    side = [inside.index(i) for i in bond_side(topology, moved, fixed, set(inside))]
    numbers, coords, frag, charge = cut_window(topology, positions, residues, charges, fragments)
    origin = coords[inside.index(fixed)]
    axis = coords[inside.index(moved)] - origin
    axis /= np.linalg.norm(axis)
    rows = []
    for angle in angles:
        twisted = coords.copy()
        twisted[side] = origin + _rotate(coords[side] - origin, axis, np.radians(angle))
        energy, forces, ref_energy, ref_forces = _model_and_reference(
            model, labeller, Structure(f"twist/{angle:g}", "twist", numbers, twisted, frag, charge)
        )
        arm = twisted[side] - origin
        torque = {
            "model": np.cross(arm, forces[side]).sum(axis=0) @ axis,
            "reference": np.cross(arm, ref_forces[side]).sum(axis=0) @ axis,
        }
        rows.append(
            {
                "angle": float(angle),
                "model_energy": energy,
                "reference_energy": ref_energy,
                "model_torque": float(torque["model"]),
                "reference_torque": float(torque["reference"]),
            }
        )
    return _relative_to_first(rows)


def _rotate(vectors: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation of ``vectors`` [N, 3] by ``angle`` (rad) about the unit ``axis``."""
    cos, sin = np.cos(angle), np.sin(angle)
    return vectors * cos + np.cross(axis, vectors) * sin + np.outer(vectors @ axis, axis) * (1 - cos)


def _model_and_reference(model, labeller, structure: Structure):
    """(model energy eV, model forces eV/Å, reference energy, reference forces) of an unlabelled
    structure, the model run in its own floating-point precision (float64 for finite-difference
    checks: float32 energies of a few thousand eV resolve only ~1e-4 eV)."""
    from ..train.batching import predict, to_sample

    dtype = next(model.parameters()).dtype
    structure.energy, structure.forces = 0.0, np.zeros_like(structure.positions)
    energy, forces = predict(model, [to_sample(structure, dtype=dtype)])
    ref = labeller.label(structure)
    return (
        float(energy[0].detach()),
        forces[0].detach().cpu().numpy().astype(np.float64),
        float(ref.energy),
        np.asarray(ref.forces, dtype=np.float64),
    )

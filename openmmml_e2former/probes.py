"""Probes of a trained network against a reference method, on pieces of proteins: does the
potential follow its reference where a run went wrong?

Each probe evaluates ``model`` (an E2Former-LSR module, in its own floating-point precision) and,
where it compares, a reference ``labeller`` (:mod:`.data.labellers`, e.g. GFN2-xTB) on H-capped
pieces cut by :mod:`.data.cutting`: the force gap between a residue in the whole protein and in its
neighbourhood (:func:`locality_gaps`), a bond stretched (:func:`bond_stretch_scan`) or twisted
(:func:`torsion_scan`), one piece along the frames of a run (:func:`piece_along_frames`), and the
largest force error per residue of labelled whole-protein structures (:func:`residue_errors`).
Research tools (they run a network and label structures), so they sit beside ``data/`` and
``train/``, not in ``analysis/``, which only reads files. Positions in Å, energies in eV, forces in
eV/Å. The command-line wrappers are in ``research/`` and ``scripts/stability.py``.
"""

from __future__ import annotations

import numpy as np

from .chemistry import formal_charge
from .data.cutting import atomic_numbers, cut_window, neighbourhood
from .data.structure import Structure


def locality_gaps(model, topology, frame: np.ndarray, fragments, radius: float = 6.0) -> np.ndarray:
    """For each residue of a protein frame (Å): the largest difference (eV/Å) between the forces
    ``model`` (an E2Former-LSR module) puts on the residue's atoms in the whole protein and in its
    neighbourhood alone (residues with an atom within ``radius`` Å of the residue, H-capped).

    A label-free check of how a potential extrapolates from the fragments it was trained on to a
    whole protein: the true (GFN2-xTB) forces on a residue change little when distant residues
    are cut away, so a large gap points at the long-range part of the model."""
    from .train.batching import predict, to_sample

    def forces(numbers, positions, frag, charge):
        s = Structure("x", "x", numbers, positions, frag, charge, energy=0.0, forces=0.0 * positions)
        return predict(model, [to_sample(s)])[1][0].detach().cpu().numpy().astype(np.float64)

    residues = list(topology.residues())
    total = formal_charge(topology, range(topology.getNumAtoms()))
    full = forces(atomic_numbers(topology), frame, fragments, total)
    gaps = np.zeros(len(residues))
    for residue in residues:
        own = [a.index for a in residue.atoms()]
        near = set()
        for atom in own:
            near |= set(neighbourhood(topology, frame, atom, radius))
        chosen = [residues[i] for i in sorted(near)]
        inside = sorted(a.index for r in chosen for a in r.atoms())
        numbers, coords, frag, charge = cut_window(topology, frame, chosen, fragments)
        local = forces(numbers, coords, frag, charge)[: len(inside)]
        where = np.searchsorted(inside, own)
        gaps[residue.index] = np.abs(full[own] - local[where]).max()
    return gaps


def bond_stretch_scan(
    model,
    labeller,
    topology,
    frame: np.ndarray,
    fragments,
    residues: list,
    moved: int,
    fixed: int,
    distances,
) -> list[dict]:
    """Energy and force along one bond, stretched in a piece of a protein frame, by ``model`` and by
    a reference ``labeller`` (e.g. GFN2-xTB): did a bond that broke in a run break because the
    potential departs from its reference, or because the reference itself does not hold it?

    ``residues`` (topology residues, H-capped as in :func:`.data.cutting.cut_window`) is the piece.
    The side of the ``fixed``-``moved`` bond that holds atom ``moved`` (topology indices; for an
    X-H bond the hydrogen alone, for ASP's CB-CG the carboxylate) is translated rigidly along the
    ``fixed`` -> ``moved`` direction of the frame, so that the bond has each length in ``distances``
    (Å). Rows: ``distance``, ``model_energy`` and ``reference_energy`` (eV, relative to the first
    distance) and ``model_force`` / ``reference_force`` (eV/Å, the total force on the moved side
    along the stretch: positive pushes it further out)."""
    inside = sorted(a.index for r in residues for a in r.atoms())
    if moved not in inside or fixed not in inside:
        raise ValueError("both atoms of the stretched bond must lie in the chosen residues")
    side = [inside.index(i) for i in bond_side(topology, moved, fixed, set(inside))]
    numbers, coords, frag, charge = cut_window(topology, frame, residues, fragments)
    m, x = inside.index(moved), inside.index(fixed)
    direction = (coords[m] - coords[x]) / np.linalg.norm(coords[m] - coords[x])
    rows = []
    for d in distances:
        moved_coords = coords.copy()
        moved_coords[side] += coords[x] + d * direction - coords[m]
        energy, forces, ref_energy, ref_forces = model_and_reference(
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
    return relative_to_first(rows)


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
    model, labeller, topology, frames, fragments, residues: list, on_frame=None
) -> list[dict]:
    """Model vs reference ``labeller`` on one piece of a protein (``residues``, H-capped as in
    :func:`.data.cutting.cut_window`) in each of ``frames`` (Å): does the potential follow its
    reference along the path a run took (an unfolding helix, say)?

    Rows: ``model_energy`` and ``reference_energy`` (eV, relative to the first frame; the
    ``*_absolute`` ones compare pieces of two runs of one protein), and the force MAE / largest
    error (eV/Å) over the piece's own atoms (the caps excluded).
    ``on_frame(row)``, if given, sees each row as it is done (absolute energies)."""
    own = sum(1 for r in residues for _ in r.atoms())
    rows = []
    for f, frame in enumerate(frames):
        numbers, coords, frag, charge = cut_window(topology, frame, residues, fragments)
        energy, forces, ref_energy, ref_forces = model_and_reference(
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
    return relative_to_first(rows, keep_absolute=True)


def relative_to_first(rows: list[dict], keep_absolute: bool = False) -> list[dict]:
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
    model, labeller, topology, positions: np.ndarray, fragments, residues: list, moved, fixed, angles
) -> list[dict]:
    """Energy and torque for a twist about one bond, by ``model`` and by a reference ``labeller``:
    is the potential as stiff as its reference against, say, twisting a peptide bond out of plane?

    The side of the ``fixed``-``moved`` bond that holds ``moved`` (:func:`bond_side`; topology
    indices) is rotated rigidly about the bond axis by each of ``angles`` (degrees, right-handed
    about ``fixed`` -> ``moved``) in the H-capped piece ``residues``. Rows: ``angle``,
    ``model_energy`` / ``reference_energy`` (eV, relative to the first angle) and ``model_torque`` /
    ``reference_torque`` (eV/rad about the axis, the sum over the rotated side; minus the slope of
    the energy)."""
    inside = sorted(a.index for r in residues for a in r.atoms())
    if moved not in inside or fixed not in inside:
        raise ValueError("both atoms of the twisted bond must lie in the chosen residues")
    side = [inside.index(i) for i in bond_side(topology, moved, fixed, set(inside))]
    numbers, coords, frag, charge = cut_window(topology, positions, residues, fragments)
    origin = coords[inside.index(fixed)]
    axis = coords[inside.index(moved)] - origin
    axis /= np.linalg.norm(axis)
    rows = []
    for angle in angles:
        twisted = coords.copy()
        twisted[side] = origin + rotate_about_axis(coords[side] - origin, axis, np.radians(angle))
        energy, forces, ref_energy, ref_forces = model_and_reference(
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
    return relative_to_first(rows)


def rotate_about_axis(vectors: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' rotation of ``vectors`` [N, 3] by ``angle`` (rad) about the unit ``axis``."""
    cos, sin = np.cos(angle), np.sin(angle)
    return vectors * cos + np.cross(axis, vectors) * sin + np.outer(vectors @ axis, axis) * (1 - cos)


def model_and_reference(model, labeller, structure: Structure):
    """(model energy eV, model forces eV/Å, reference energy, reference forces) of an unlabelled
    structure, the model run in its own floating-point precision (float64 for finite-difference
    checks: float32 energies of a few thousand eV resolve only ~1e-4 eV)."""
    from .train.batching import predict, to_sample

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


def piece_summary(rows: list[dict]) -> dict:
    """Agreement of the energy changes (MAE, correlation) and the mean force MAE of
    :func:`piece_along_frames` rows."""
    model = np.array([r["model_energy"] for r in rows])
    reference = np.array([r["reference_energy"] for r in rows])
    return {
        "energy_change_mae": float(np.abs(model - reference).mean()),
        "energy_change_correlation": float(np.corrcoef(model, reference)[0, 1]) if len(rows) > 2 else None,
        "reference_energy_range": float(reference.max() - reference.min()),
        "force_mae_mean": float(np.mean([r["force_mae"] for r in rows])),
        "force_mae_max": float(np.max([r["force_mae"] for r in rows])),
    }


def residue_index(pdb: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(residue index of each atom, residue names, atomic numbers) of a PDB file's atoms."""
    import mdtraj

    top = mdtraj.load(pdb).topology
    residues = np.array([a.residue.index for a in top.atoms])
    numbers = np.array([a.element.atomic_number for a in top.atoms])
    return residues, [str(r) for r in top.residues], numbers


def residue_errors(model, structures, residues: np.ndarray) -> list[np.ndarray]:
    """Per labelled structure, the largest absolute force-component error (eV/Å) of each residue
    (``residues[i]`` is atom i's residue index), the model evaluated in float64."""
    import torch

    from .train.batching import predict, to_sample

    samples = [to_sample(s, dtype=torch.float64) for s in structures]
    _, forces = predict(model.double().eval(), samples)
    out = []
    for structure, predicted in zip(structures, forces, strict=True):
        err = np.abs(predicted.detach().numpy() - structure.forces)
        out.append(np.array([err[residues == r].max() for r in range(int(residues.max()) + 1)]))
    return out

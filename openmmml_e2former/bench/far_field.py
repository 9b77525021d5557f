"""How much of the oracle's force comes from far away: a bound on what a model that sees only so far misses.

A model whose energy sees atoms within R of each atom can represent the force of atoms farther
than R only through neighbours (up to 2R), and beyond that only its average over the environments
it was trained on: the force from beyond R bounds what it misses from above. For the AMBER14 oracle of the
size-scaling set that part is exact and cheap: the Coulomb and Lennard-Jones forces of the atom
pairs farther apart than R (no bonded term and no 1-2/1-3/1-4 exception reaches 5 Å). Its mean
absolute component, per size, says whether the experiment *can* show a local model's error
growing with size: only if it grows and is not buried under the models' own error
(``docs/accuracy.md``).

The protein families' evaluation members (segments, spheres) are rebuilt from the set's prepared
structure and MD frames (``raw/``), their positions checked against the stored ones, and their
AMBER14 parameters read from the oracle's own System.
"""

from __future__ import annotations

import re

import numpy as np

from ..units import ANGSTROM_PER_NM, KJ_PER_MOL_TO_EV
from ..units import COULOMB as COULOMB_BY_UNIT

#: receptive radii (Å): one 5 Å hop, the 3-block local model's 15 Å, and beyond
RADII = (5.0, 10.0, 15.0, 20.0)
#: Coulomb constant, kJ/mol nm e^-2 (OpenMM's ONE_4PI_EPS0)
COULOMB = COULOMB_BY_UNIT["kJ/mol"] / ANGSTROM_PER_NM
#: kJ/mol/nm -> eV/Å
KJ_NM_TO_EV_ANGSTROM = KJ_PER_MOL_TO_EV / ANGSTROM_PER_NM


def nonbonded_parameters(system) -> tuple[np.ndarray, np.ndarray, np.ndarray, set]:
    """(charges e, sigmas nm, epsilons kJ/mol, excluded or exception pairs) of a System's
    NonbondedForce."""
    import openmm

    others = [
        type(f).__name__
        for f in system.getForces()
        if "Nonbonded" in type(f).__name__ or "GB" in type(f).__name__
    ]
    if others != ["NonbondedForce"]:
        raise ValueError(f"the far field is the NonbondedForce's alone; this System has {others}")
    force = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    n = force.getNumParticles()
    params = [force.getParticleParameters(i) for i in range(n)]
    charges = np.array([p[0]._value for p in params])
    sigmas = np.array([p[1]._value for p in params])
    epsilons = np.array([p[2]._value for p in params])
    pairs = set()
    for k in range(force.getNumExceptions()):
        i, j = force.getExceptionParameters(k)[:2]
        pairs.add((min(i, j), max(i, j)))
    return charges, sigmas, epsilons, pairs


def far_field_forces(
    positions: np.ndarray, charges, sigmas, epsilons, exceptions: set, radii=RADII
) -> np.ndarray:
    """Forces (eV/Å) ``[len(radii), N, 3]`` on each atom from the Coulomb + Lennard-Jones terms
    (Lorentz-Berthelot) of the atoms farther than each radius (Å); exception pairs are left out
    (they are all closer than the smallest radius in a protein)."""
    x = np.asarray(positions, dtype=np.float64) * 0.1  # nm
    d = x[:, None, :] - x[None, :, :]
    r = np.linalg.norm(d, axis=-1)
    np.fill_diagonal(r, np.inf)
    sigma = 0.5 * (sigmas[:, None] + sigmas[None, :])
    epsilon = np.sqrt(epsilons[:, None] * epsilons[None, :])
    sr6 = (sigma / r) ** 6
    # -dE/dr / r for E = k qi qj / r + 4 eps (sr^12 - sr^6)
    scale = (COULOMB * charges[:, None] * charges[None, :] / r + 24.0 * epsilon * (2.0 * sr6 * sr6 - sr6)) / (
        r * r
    )
    for i, j in exceptions:
        scale[i, j] = scale[j, i] = 0.0
    out = np.empty((len(radii), len(x), 3))
    for k, radius in enumerate(radii):
        far = np.where(r > 0.1 * radius, scale, 0.0)
        out[k] = np.einsum("ij,ijc->ic", far, d)
    return out * KJ_NM_TO_EV_ANGSTROM


_SEGMENT = re.compile(r"-seg:(\d+)-(\d+)/f(\d+)$")
_SPHERE = re.compile(r"-sphere:([A-Z]+)(\w+?)/r([\d.]+)/f(\d+)$")


def residues_of(structure_id: str, topology, frames) -> tuple[list[int], int] | None:
    """(residue indices, frame) a segment or sphere member was cut from, from its id; None for
    other families."""
    from ..data.scaling import sphere_residues

    match = _SEGMENT.search(structure_id)
    if match:
        first, last, frame = (int(g) for g in match.groups())
        return list(range(first - 1, last)), frame
    match = _SPHERE.search(structure_id)
    if match:
        name, number, radius, frame = (
            match.group(1),
            match.group(2),
            float(match.group(3)),
            int(match.group(4)),
        )
        centre = next(r.index for r in topology.residues() if r.name == name and r.id == number)
        return sphere_residues(topology, frames[frame], centre, radius), frame
    return None


def missed_fraction(far: np.ndarray, errors: np.ndarray) -> tuple[float, float, float, int]:
    """``(-sum(far . errors), sum(far . far), sum(errors . errors), components)`` over atoms and
    components, for a structure's far-field forces and a model's force errors (both ``[N, 3]``,
    eV/Å). Summed over structures, :func:`fraction_and_error` turns them into the least-squares
    coefficient of ``-far`` in the errors: the fraction of the far field the model leaves out
    (1: all of it, as a model blind beyond R must; 0: it reproduces it, or its errors are
    unrelated to it)."""
    far = np.asarray(far, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    return float(-(far * errors).sum()), float((far * far).sum()), float((errors * errors).sum()), far.size


def fraction_and_error(terms) -> tuple[float | None, float | None]:
    """(fraction, its standard error) from the :func:`missed_fraction` terms of each structure
    of a bin; (None, None) unless at least two structures have a far field. The standard
    error is taken over structures, sqrt(sum_s (beta norm_s - dot_s)^2) / sum_s norm_s, because
    a far field and a model's errors are smooth across the atoms of one structure: its atoms are
    not independent samples."""
    terms = [tuple(t) for t in terms]
    dots = np.array([t[0] for t in terms], dtype=np.float64)
    norms = np.array([t[1] for t in terms], dtype=np.float64)
    if (norms > 0).sum() < 2:
        return None, None
    beta = float(dots.sum() / norms.sum())
    return beta, float(np.sqrt(((beta * norms - dots) ** 2).sum()) / norms.sum())


def paired_difference(terms_a, terms_b) -> tuple[float | None, float | None]:
    """(fraction a leaves out - fraction b leaves out, its standard error) from two models'
    :func:`missed_fraction` terms on the same structures. The far field is the same for both,
    so the difference is one least-squares coefficient over the per-structure differences of
    the dot products, and its error (over structures, as in :func:`fraction_and_error`) drops
    what the two models share: smaller than either model's own error when their errors on each
    structure go together."""
    pairs = [(tuple(a), tuple(b)) for a, b in zip(terms_a, terms_b, strict=True)]
    if any(a[1] != b[1] for a, b in pairs):
        raise ValueError("paired_difference: the two models' terms are not on the same far fields")
    return fraction_and_error([(a[0] - b[0], a[1]) for a, b in pairs])


def far_field_table(
    set_dir: str, structures, radii=RADII, quick: bool = False, seed: int = 0, progress=print, predicted=None
) -> dict:
    """Per protein evaluation member (segments, spheres): atoms, mean |component| of the oracle
    force and of its part from beyond each radius (eV/Å); with ``predicted`` (model name ->
    {id: (energy, forces)}), each model's :func:`missed_fraction` terms per radius. ~15 CPU s for
    the full set."""
    from ..data.scaling import AmberOracle, capped_piece, protein_and_frames

    ids = sorted(s.id for s in structures if _SEGMENT.search(s.id) or _SPHERE.search(s.id))
    topology, frames, _ = protein_and_frames(set_dir, quick, seed)
    oracle = AmberOracle()
    rows = {}
    wanted = {s.id: s for s in structures if s.id in ids}
    for n, (sid, s) in enumerate(sorted(wanted.items())):
        residues, frame = residues_of(sid, topology, frames)
        piece, xyz = capped_piece(topology, frames[frame], residues)
        if xyz.shape != s.positions.shape or not np.allclose(xyz, s.positions, atol=1e-4):
            raise ValueError(f"{sid}: the rebuilt piece does not match the stored structure")
        forces = far_field_forces(xyz, *nonbonded_parameters(oracle.system(piece)), radii=radii)
        rows[sid] = {
            "atoms": int(s.num_atoms),
            "force_mean_abs": float(np.abs(s.forces).mean()),
            "far_mean_abs": {f"{r:g}": float(np.abs(f).mean()) for r, f in zip(radii, forces, strict=True)},
        }
        if predicted:
            rows[sid]["missed"] = {
                name: {
                    f"{r:g}": missed_fraction(f, np.asarray(p[sid][1]) - np.asarray(s.forces))
                    for r, f in zip(radii, forces, strict=True)
                }
                for name, p in predicted.items()
            }
        if n % 20 == 0:
            progress(f"far field: {n + 1}/{len(wanted)} ({sid}, {s.num_atoms} atoms)")
    return {"radii": list(radii), "structures": rows}

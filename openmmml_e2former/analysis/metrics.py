"""Structural observables as plain functions over an ``mdtraj.Trajectory``, returning arrays.

Units follow mdtraj: lengths in nm, areas in nm^2.  No plotting here (see ``plots.py``).
"""

from __future__ import annotations

import numpy as np


def image_and_superpose(traj, align_indices, reference=None):
    """Make molecules whole across the periodic box, then superpose every frame on ``reference``.

    Args:
        traj: an ``mdtraj.Trajectory`` (not modified).
        align_indices: atoms (indices into ``traj``) used for the fit, e.g. the backbone.
        reference: a one-frame trajectory with the same atoms (default: ``traj[0]``).

    Returns:
        A new, superposed trajectory.
    """
    out = traj[:]
    if out.unitcell_vectors is not None and out.topology.n_bonds:
        molecules = out.topology.find_molecules()
        largest = max(molecules, key=len)
        others = [m for m in molecules if m is not largest]
        out.image_molecules(inplace=True, anchor_molecules=[largest], other_molecules=others, make_whole=True)
    reference = out[0] if reference is None else reference
    out.superpose(reference, frame=0, atom_indices=align_indices)
    return out


def rmsd(traj, reference, atom_indices, superpose: bool = True) -> np.ndarray:
    """RMSD (nm) of ``atom_indices`` of each frame to frame 0 of ``reference``, shape (n_frames,).

    ``superpose=True`` removes the optimal rotation and translation first (mdtraj.rmsd);
    ``False`` compares the coordinates as they are.
    """
    import mdtraj

    atoms = np.asarray(atom_indices, dtype=int)
    if superpose:
        return mdtraj.rmsd(traj, reference, 0, atom_indices=atoms).astype(float)
    delta = traj.xyz[:, atoms, :] - reference.xyz[0, atoms, :]
    return np.sqrt((delta**2).sum(axis=2).mean(axis=1)).astype(float)


def rmsf(traj, atom_indices) -> np.ndarray:
    """Root-mean-square fluctuation (nm) of each atom about its mean position, shape (n_atoms,).

    The trajectory is used as given: superpose it first (:func:`image_and_superpose`).
    """
    xyz = traj.xyz[:, np.asarray(atom_indices, dtype=int), :]
    return np.sqrt(((xyz - xyz.mean(axis=0)) ** 2).sum(axis=2).mean(axis=0)).astype(float)


def residue_rmsf(traj, selection: str = "name CA") -> tuple[np.ndarray, np.ndarray]:
    """``(residue numbers, RMSF in nm)`` of one atom per residue (default the C-alpha)."""
    atoms = traj.topology.select(selection)
    residues = np.array([traj.topology.atom(int(i)).residue.resSeq for i in atoms])
    return residues, rmsf(traj, atoms)


def radius_of_gyration(traj, atom_indices=None) -> np.ndarray:
    """Mass-weighted radius of gyration (nm) per frame, shape (n_frames,)."""
    import mdtraj

    sub = traj if atom_indices is None else traj.atom_slice(np.asarray(atom_indices, dtype=int))
    masses = np.array([a.element.mass for a in sub.topology.atoms])
    return mdtraj.compute_rg(sub, masses=masses).astype(float)


def secondary_structure(traj) -> np.ndarray:
    """DSSP codes per frame and residue (simplified: H helix, E strand, C coil), shape (n_frames, n_residues).

    Non-protein residues get ``'NA'``; pass a protein-only trajectory.
    """
    import mdtraj

    return mdtraj.compute_dssp(traj, simplified=True)


def secondary_structure_fractions(codes: np.ndarray) -> dict[str, np.ndarray]:
    """Fraction of protein residues in helix, strand and coil per frame (from :func:`secondary_structure`)."""
    protein = codes != "NA"
    counts = np.maximum(protein.sum(axis=1), 1)
    return {
        name: ((codes == code) & protein).sum(axis=1) / counts
        for name, code in (("helix", "H"), ("strand", "E"), ("coil", "C"))
    }


def hydrogen_bond_counts(traj) -> np.ndarray:
    """Number of hydrogen bonds per frame (Wernet-Nilsson criterion), shape (n_frames,)."""
    import mdtraj

    return np.array([len(bonds) for bonds in mdtraj.wernet_nilsson(traj)], dtype=int)


def sasa(traj, n_sphere_points: int = 240) -> np.ndarray:
    """Total solvent-accessible surface area (nm^2) per frame (Shrake-Rupley), shape (n_frames,).

    Computed for the atoms of ``traj`` alone: slice the solute first.
    """
    import mdtraj

    return mdtraj.shrake_rupley(traj, n_sphere_points=n_sphere_points).sum(axis=1).astype(float)

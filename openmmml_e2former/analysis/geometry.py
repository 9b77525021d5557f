"""Local geometry of the protein in a run folder, frame by frame: heavy-atom bond lengths and
angles against the prepared structure, peptide-bond planarity (|omega - 180|), and the kinetic
temperature of protein and solvent in a stage's final state. Reads files only (mdtraj; the final
state from OpenMM's ``state.xml``). ``research/run_geometry.py`` prints and writes them for runs
side by side (an ML/MM run and a classical one).
"""

from __future__ import annotations

import os

import numpy as np

from ..chemistry import is_water_or_ion

#: Boltzmann's constant in kJ/mol/K
KB_KJ_MOL_K = 0.008314462618
#: residue names counted as solvent (water and ions)


def load_protein(folder: str):
    """The protein atoms of a run folder's last NVT stage (trajectory), of its prepared structure
    (one frame), and the stage's folder name."""
    import mdtraj

    stage = sorted(d for d in os.listdir(os.path.join(folder, "stages")) if d.endswith("nvt"))[-1]
    top = os.path.join(folder, "prepared.pdb")
    traj = mdtraj.load_dcd(os.path.join(folder, "stages", stage, "trajectory.dcd"), top=top)
    protein = traj.topology.select("protein")
    return traj.atom_slice(protein), mdtraj.load(top).atom_slice(protein), stage


def heavy_bonds_and_angles(topology) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs of bonds between heavy atoms, and triples of every bonded angle without H."""
    heavy = {a.index for a in topology.atoms if a.element.symbol != "H"}
    bonds = [(a.index, b.index) for a, b in topology.bonds if a.index in heavy and b.index in heavy]
    neighbours: dict[int, list[int]] = {}
    for i, j in bonds:
        neighbours.setdefault(i, []).append(j)
        neighbours.setdefault(j, []).append(i)
    angles = [
        (a, centre, c) for centre, ns in neighbours.items() for k, a in enumerate(ns) for c in ns[k + 1 :]
    ]
    return np.array(bonds), np.array(angles)


def frame_geometry(traj, reference) -> list[dict]:
    """Per frame: mean |change| of heavy-atom bond lengths (Å) and angles (degrees) against the
    prepared structure, and the mean and largest |omega - 180| of the peptide bonds (degrees)."""
    import mdtraj

    bonds, angles = heavy_bonds_and_angles(traj.topology)
    d = 10 * mdtraj.compute_distances(traj, bonds, periodic=False)
    d0 = 10 * mdtraj.compute_distances(reference, bonds, periodic=False)[0]
    a = np.degrees(mdtraj.compute_angles(traj, angles, periodic=False))
    a0 = np.degrees(mdtraj.compute_angles(reference, angles, periodic=False))[0]
    _, omega = mdtraj.compute_omega(traj)
    twist = np.degrees(np.abs(np.angle(-np.exp(1j * omega))))  # |omega - 180|, wrapped
    return [
        {
            "frame": f,
            "bond_change_angstrom": float(np.abs(d[f] - d0).mean()),
            "angle_change_degrees": float(np.abs(a[f] - a0).mean()),
            "omega_twist_mean_degrees": float(twist[f].mean()),
            "omega_twist_max_degrees": float(twist[f].max()),
        }
        for f in range(traj.n_frames)
    ]


def most_twisted(traj, count: int = 6) -> list[dict]:
    """The peptide bonds furthest from planar over the run: mean and largest |omega - 180|
    (degrees) and the number of frames beyond 40 degrees; named ``RES4-RES5``."""
    import mdtraj

    atoms, omega = mdtraj.compute_omega(traj)
    twist = np.degrees(np.abs(np.angle(-np.exp(1j * omega))))
    rows = []
    for k in np.argsort(twist.mean(axis=0))[::-1][:count]:
        before, after = (traj.topology.atom(int(i)).residue for i in (atoms[k][1], atoms[k][2]))
        rows.append(
            {
                "bond": f"{before.name}{before.resSeq}-{after.name}{after.resSeq}",
                "mean_degrees": float(twist[:, k].mean()),
                "max_degrees": float(twist[:, k].max()),
                "frames_over_40": int((twist[:, k] > 40).sum()),
            }
        )
    return rows


def final_temperatures(folder: str, stage: str) -> dict:
    """Kinetic temperature (K) of protein and solvent in the stage's final state, from the saved
    velocities; X-H bonds of the protein and rigid waters are taken as constrained."""
    import openmm
    import openmm.app as app
    import openmm.unit as unit

    pdb = app.PDBFile(os.path.join(folder, "prepared.pdb"))
    with open(os.path.join(folder, "stages", stage, "state.xml")) as handle:
        state = openmm.XmlSerializer.deserialize(handle.read())
    v = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    atoms = list(pdb.topology.atoms())
    mass = np.array([a.element.mass.value_in_unit(unit.dalton) for a in atoms])
    solvent = np.array([is_water_or_ion(a.residue.name) for a in atoms])
    hydrogen = np.array([a.element.symbol == "H" for a in atoms])
    waters = sum(1 for r in pdb.topology.residues() if r.name == "HOH")
    out = {}
    for name, chosen, constraints in (
        ("protein", ~solvent, int(hydrogen[~solvent].sum())),
        ("solvent", solvent, 3 * waters),
    ):
        kinetic = 0.5 * (mass[chosen, None] * v[chosen] ** 2).sum()
        out[name] = float(2 * kinetic / ((3 * chosen.sum() - constraints) * KB_KJ_MOL_K))
    return out

"""The benchmark systems, all built from OpenMM's villin test system.

OpenMM ships ``openmm/app/data/test.pdb``: villin headpiece (582 protein atoms), 2761 TIP3P
waters and 2 Cl- ions, 8867 atoms in a 4.92 x 4.60 x 3.89 nm box. From it:

=========  ==============================================================================
size       atoms
=========  ==============================================================================
100        the first whole residues of villin (about 100 atoms; the cut peptide bond
           gets a hydrogen cap), non-periodic
582        the protein, non-periodic
2000       protein + its nearest whole waters/ions, moved to the images nearest the
           protein: a compact non-periodic cluster of exactly 2000 atoms
8867       the whole periodic box
17734      the box replicated 2 x 1 x 1 (periodic)
35468      the box replicated 2 x 2 x 1 (periodic)
=========  ==============================================================================

Positions are in nm (OpenMM's unit) unless a name says ``_angstrom``. Only ``openmm`` and
``numpy`` are imported at module level.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

#: size label -> replication of the 8867-atom box (the periodic sizes)
REPLICAS = {8867: (1, 1, 1), 17734: (2, 1, 1), 35468: (2, 2, 1)}
#: every size label this module builds, smallest first
SIZES = (100, 582, 2000, 8867, 17734, 35468)


@dataclass
class BenchSystem:
    """One benchmark system.

    ``topology``/``positions_nm`` [n_total, 3] describe the whole (possibly replicated) box;
    ``ml_atoms`` are the atoms the model sees (sorted topology indices); ``box_nm`` [3, 3] is
    set when the model should treat them as periodic, None for a non-periodic cluster.
    Non-periodic clusters have their atoms already moved to the images nearest the protein.
    """

    label: int
    description: str
    topology: object
    positions_nm: np.ndarray
    ml_atoms: list[int]
    box_nm: np.ndarray | None
    extra: dict = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return len(self.ml_atoms)

    @property
    def periodic(self) -> bool:
        return self.box_nm is not None


def villin_pdb_path() -> str:
    import openmm.app as app

    return os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")


@lru_cache(maxsize=1)
def _villin():
    import openmm.app as app
    import openmm.unit as unit

    pdb = app.PDBFile(villin_pdb_path())
    positions = np.array(pdb.positions.value_in_unit(unit.nanometer), dtype=np.float64)
    vectors = pdb.topology.getPeriodicBoxVectors()
    box = np.array([[v[k].value_in_unit(unit.nanometer) for k in range(3)] for v in vectors])
    return pdb.topology, positions, box


def villin():
    """(topology, positions [8867, 3] nm, box [3, 3] nm) of OpenMM's ``test.pdb``."""
    topology, positions, box = _villin()
    return topology, positions.copy(), box.copy()


def protein_atoms(topology) -> list[int]:
    """Indices of the amino-acid residues' atoms (582 for villin)."""
    from ..fragments import AMINO_ACID_RESIDUE_NAMES

    return [a.index for a in topology.atoms() if a.residue.name.upper() in AMINO_ACID_RESIDUE_NAMES]


def first_residues(topology, n_atoms: int) -> list[int]:
    """Atoms of the first whole protein residues, as many residues as keep the total at or
    just above ``n_atoms`` (the residue that crosses ``n_atoms`` is included)."""
    from ..fragments import AMINO_ACID_RESIDUE_NAMES

    chosen: list[int] = []
    for residue in topology.residues():
        if residue.name.upper() not in AMINO_ACID_RESIDUE_NAMES:
            continue
        if len(chosen) >= n_atoms:
            break
        chosen.extend(a.index for a in residue.atoms())
    return sorted(chosen)


def minimum_image(delta: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Minimum image of ``[..., 3]`` displacements (rows of ``box`` are reduced lattice vectors)."""
    for k in (2, 1, 0):
        delta = delta - np.round(delta[..., k : k + 1] / box[k, k]) * box[k]
    return delta


def protein_plus_nearest(
    topology,
    positions: np.ndarray,
    box: np.ndarray,
    n_atoms: int | None = None,
    n_residues: int | None = None,
) -> tuple[list[int], np.ndarray]:
    """Protein + the whole non-protein residues (waters, ions) nearest to any protein atom.

    Distances use the minimum image; each added residue is moved by whole box vectors to
    the image nearest the protein, so the result is a compact, non-periodic cluster.  With
    ``n_atoms`` residues are added in order of distance, skipping any that would overshoot,
    until exactly ``n_atoms`` (or as close as possible); with ``n_residues`` that many
    residues are added.  Returns (atom indices in topology order, unwrapped positions of
    every atom of the topology [n_total, 3] Angstrom).
    """
    protein = protein_atoms(topology)
    pset = set(protein)
    ppos = positions[protein]
    centre = ppos.mean(axis=0)
    unwrapped = positions.copy()
    candidates = []
    for residue in topology.residues():
        idx = [a.index for a in residue.atoms()]
        if idx[0] in pset:
            continue
        shift = minimum_image(positions[idx[0]] - centre, box) - (positions[idx[0]] - centre)
        unwrapped[idx] = positions[idx] + shift
        d = np.sqrt(((unwrapped[idx][:, None, :] - ppos[None, :, :]) ** 2).sum(-1)).min()
        candidates.append((d, idx))
    candidates.sort(key=lambda c: c[0])
    chosen = list(protein)
    added = 0
    for _, idx in candidates:
        if n_atoms is not None:
            if len(chosen) >= n_atoms:
                break
            if len(chosen) + len(idx) > n_atoms:
                continue
        elif n_residues is not None and added >= n_residues:
            break
        chosen.extend(idx)
        added += 1
    return sorted(chosen), unwrapped


def replicate(topology, positions: np.ndarray, box: np.ndarray, reps: tuple[int, int, int]):
    """The periodic box repeated ``reps`` times along its (rectangular) box vectors.

    Returns (topology with the chains copied, positions [n * prod(reps), 3] nm, box [3, 3] nm).
    Bonds are copied within each replica; residue ids keep their values (each copy is a new
    chain), so fragment assignment sees every copy as its own residues and waters.
    """
    import openmm.app as app
    import openmm.unit as unit

    if tuple(reps) == (1, 1, 1):
        return topology, positions, box
    new = app.Topology()
    new_box = box * np.array(reps)[:, None]
    all_positions = []
    for i in range(reps[0]):
        for j in range(reps[1]):
            for k in range(reps[2]):
                shift = i * box[0] + j * box[1] + k * box[2]
                mapping = {}
                for chain in topology.chains():
                    new_chain = new.addChain(chain.id)
                    for residue in chain.residues():
                        new_residue = new.addResidue(
                            residue.name, new_chain, residue.id, residue.insertionCode
                        )
                        for atom in residue.atoms():
                            mapping[atom] = new.addAtom(atom.name, atom.element, new_residue, atom.id)
                for bond in topology.bonds():
                    new.addBond(mapping[bond[0]], mapping[bond[1]], bond.type, bond.order)
                all_positions.append(positions + shift)
    new.setPeriodicBoxVectors([openmm_vec(v) for v in new_box] * unit.nanometer)
    return new, np.concatenate(all_positions), new_box


def openmm_vec(v):
    import openmm

    return openmm.Vec3(float(v[0]), float(v[1]), float(v[2]))


def system_for_size(n: int) -> BenchSystem:
    """The benchmark system of a size label (see the module docstring)."""
    topology, positions, box = villin()
    protein = protein_atoms(topology)
    if n == 100:
        atoms = first_residues(topology, 100)
        return BenchSystem(n, "first whole residues of villin", topology, positions, atoms, None)
    if n == len(protein):
        return BenchSystem(n, "villin protein", topology, positions, protein, None)
    if n in REPLICAS:
        reps = REPLICAS[n]
        top, pos, bx = replicate(topology, positions, box, reps)
        what = (
            "whole villin box" if reps == (1, 1, 1) else f"villin box replicated {'x'.join(map(str, reps))}"
        )
        return BenchSystem(n, what, top, pos, list(range(top.getNumAtoms())), bx, {"replicas": list(reps)})
    if len(protein) < n < topology.getNumAtoms():
        atoms, unwrapped = protein_plus_nearest(topology, positions, box, n)
        return BenchSystem(
            n, "villin protein + nearest whole waters (cluster)", topology, unwrapped, atoms, None
        )
    raise ValueError(f"no benchmark system of {n} atoms; known sizes: {', '.join(map(str, SIZES))}")


def mm_system(topology):
    """amber14-all + amber14/tip3pfb, PME with a 1 nm cutoff, HBonds constraints."""
    import openmm.app as app
    import openmm.unit as unit

    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
    return forcefield.createSystem(
        topology, nonbondedMethod=app.PME, nonbondedCutoff=1.0 * unit.nanometer, constraints=app.HBonds
    )


def ml_region(topology, region: str) -> list[int] | None:
    """ML atoms of an OpenMM ML/MM case: 'protein', 'first100' (first whole residues, ~100
    atoms) or 'all' (None: the whole system is the ML region)."""
    if region == "protein":
        return protein_atoms(topology)
    if region == "first100":
        return first_residues(topology, 100)
    if region == "all":
        return None
    raise ValueError(f"unknown ML region {region!r}: use protein, first100 or all")

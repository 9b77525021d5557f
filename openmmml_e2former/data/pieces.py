"""Protein-size training pieces, with the size-scaling set's cutting rules
(:func:`.scaling.capped_piece`): capped spheres and segments of 150-600 atoms of proteins other than
the held-out ones (active learning, round 4), and pieces of an explicit-water ML/MM run's frames
with their first water shell (round 5). ``datasets/README.md`` says how they were made."""

from __future__ import annotations

import os

import numpy as np

from ..chemistry import is_water_or_ion
from ..fragments import fragment_ids_from_topology
from ..optional import require
from .cutting import atomic_numbers, protein_only
from .generators import protein_for_md
from .scaling import AmberOracle, capped_piece, protein_frames, sphere_residues
from .structure import Structure

#: protonated proteins shipped in openmmforcefields (the perses JACS benchmark set) that AMBER14
#: reads as they are and that have no disulfides: sources of protein-size training pieces. 1BHL
#: (the size-scaling set) and villin's whole protein stay held out.
PIECE_PROTEINS = {
    "MCL1": "mcl1/MCL1_protein.pdb",
    "PTP1B": "ptp1b/PTP1B_protein.pdb",
    "Tyk2": "tyk2/Tyk2_protein.pdb",
    "p38": "p38a/p38_protein.pdb",
}


def piece_protein_path(name: str) -> str:
    """The PDB file of :data:`PIECE_PROTEINS` ``[name]`` inside the installed openmmforcefields."""
    if name not in PIECE_PROTEINS:
        raise ValueError(f"unknown protein {name!r}; use one of {sorted(PIECE_PROTEINS)}")
    off = require("openmmforcefields", "ligands", "the proteins of the perses benchmark set")
    return os.path.join(os.path.dirname(off.__file__), "data", "perses_jacs_systems", PIECE_PROTEINS[name])


def _piece_of_size(topology, frame, kind: str, target: int, rng, charged: list[int]) -> list[int]:
    """Residue indices of one piece of about ``target`` atoms (the first that reaches it): a sphere
    (whole residues within a growing radius of a random charged residue's CA) or a segment
    (residues from a random start, grown along its chain)."""
    residues = list(topology.residues())
    sizes = np.array([len(list(r.atoms())) for r in residues])
    if kind == "sphere":
        centre = int(rng.choice(charged))
        keep: list[int] = []
        for radius in np.arange(5.0, 30.0, 0.5):
            keep = sphere_residues(topology, frame, centre, float(radius))
            if sizes[keep].sum() >= target:
                break
        return keep
    start = int(rng.integers(len(residues)))
    while residues[start].name in CAP_RESIDUES:  # a segment starts at an amino acid
        start = int(rng.integers(len(residues)))
    chain = residues[start].chain
    keep = [start]
    while sizes[keep].sum() < target:
        after, before = keep[-1] + 1, keep[0] - 1
        if after < len(residues) and residues[after].chain is chain:
            keep.append(after)
        elif before >= 0 and residues[before].chain is chain:
            keep.insert(0, before)
        else:
            break
    return keep


#: caps a prepared protein may carry (at its termini, or where its chain is broken)
CAP_RESIDUES = ("ACE", "NME")


def _with_existing_caps(residues, keep: list[int]) -> list[int]:
    """``keep`` plus the ACE/NME caps the protein already has next to it, and the residue a kept
    cap belongs to (a cap has no CA to cut a new cap from, and alone it is no molecule)."""
    out = set(keep)
    for i in keep:
        for j in (i - 1, i + 1):
            if 0 <= j < len(residues) and residues[j].chain is residues[i].chain:
                if residues[j].name in CAP_RESIDUES or residues[i].name in CAP_RESIDUES:
                    out.add(j)
    return sorted(out)


def _piece_structure(oracle, topology, positions, residues, keep, molecule, name, kind, frame, where):
    """The unlabelled :class:`Structure` of a capped piece (``topology``, ``positions`` Å) holding
    ``residues[keep]``: id ``{molecule}-{kind}:{first}-{last}:{count}/f{frame}``, AMBER14's charge;
    ``where`` (with ``{f}`` for the frame) ends its source line."""
    first, last = residues[keep[0]].id, residues[keep[-1]].id
    return Structure(
        id=f"{molecule}-{kind}:{first}-{last}:{len(keep)}/f{frame}",
        molecule=molecule,
        numbers=atomic_numbers(topology),
        positions=positions,
        fragment_ids=fragment_ids_from_topology(topology),
        charge=oracle.charge(topology),
        source=f"{name} {kind} of {len(keep)} residues ({first}-{last}), ACE/NME-capped, "
        + where.format(f=frame),
    )


def protein_pieces(
    pdb: str,
    name: str,
    num_frames: int = 3,
    interval: int = 500,
    spheres: int = 3,
    segments: int = 2,
    atoms: tuple[int, int] = (150, 600),
    seed: int = 0,
    threads: int = 1,
) -> list[Structure]:
    """Pieces of ``atoms[0]``-``atoms[1]`` atoms (target sizes drawn uniformly) of the protein in ``pdb``:
    per frame ``spheres`` spheres around charged residues and ``segments`` contiguous segments,
    ACE/NME-capped where the chain is cut (:func:`.scaling.capped_piece`); a residue set drawn twice
    in a frame is drawn again. Frames: the file's structure and ``num_frames - 1`` frames of
    AMBER14/OBC2 MD at 350 K, ``interval`` fs apart (:func:`.scaling.protein_frames`). Ids
    ``{name}-{kind}:{first}-{last}:{residues}/f{frame}``; every piece of one protein is one
    molecule (one split group). Unlabelled; the total charge is AMBER14's."""
    top, pos = protein_for_md(pdb)
    residues = list(top.residues())
    charged = [r.index for r in residues if r.name in ("LYS", "ARG", "ASP", "GLU")]
    frames = protein_frames(top, pos, num_frames, seed, interval=interval, threads=threads)
    rng = np.random.default_rng(seed)
    oracle = AmberOracle()
    out = []
    for f, frame in enumerate(frames):
        seen: set = set()
        for kind, count in (("sphere", spheres), ("segment", segments)):
            made = 0
            for _ in range(20 * count):
                if made == count:
                    break
                target = int(rng.integers(atoms[0], atoms[1] + 1))
                keep = _with_existing_caps(residues, _piece_of_size(top, frame, kind, target, rng, charged))
                if tuple(keep) in seen:
                    continue
                piece, xyz = capped_piece(top, frame, keep)
                if not atoms[0] <= len(xyz) <= atoms[1]:
                    continue
                seen.add(tuple(keep))
                out.append(
                    _piece_structure(
                        oracle, piece, xyz, residues, keep, name, name, kind, f, "frame {f} (OBC2 MD 350 K)"
                    )
                )
                made += 1
    return out


def protein_pieces_set(names=tuple(PIECE_PROTEINS), seed: int = 0, **options) -> list[Structure]:
    """:func:`protein_pieces` of several proteins, interleaved (one of each protein in turn) so a
    partly labelled set covers them all."""
    per_protein = [
        protein_pieces(piece_protein_path(n), n, seed=seed + i, **options) for i, n in enumerate(names)
    ]
    out = []
    for i in range(max(len(p) for p in per_protein)):
        out.extend(p[i] for p in per_protein if i < len(p))
    return out


def _with_waters(piece, xyz, topology, frame, waters: list[int]):
    """(topology, positions Å) of a capped protein piece plus the given water residues of ``topology``
    (their atoms' positions in ``frame``, already at the piece's periodic image)."""
    import openmm.app as app
    import openmm.unit as unit

    modeller = app.Modeller(piece, xyz * 0.1 * unit.nanometer)
    keep = set(waters)
    solvent = app.Modeller(topology, frame * 0.1 * unit.nanometer)
    solvent.delete([r for r in topology.residues() if r.index not in keep])
    modeller.add(solvent.topology, solvent.positions)
    return modeller.topology, np.array(modeller.positions.value_in_unit(unit.angstrom))


def solvated_run_pieces(
    folder: str,
    name: str,
    frames: list[int],
    spheres: int = 2,
    segments: int = 1,
    protein_atoms: tuple[int, int] = (120, 330),
    water_radius: float = 3.5,
    max_atoms: int = 650,
    seed: int = 0,
    shell_around_caps: bool = True,
) -> list[Structure]:
    """Capped pieces of the protein in the saved ``frames`` of an explicit-water ``e2former run``
    folder (rectangular box), each with the whole waters whose oxygen lies within ``water_radius`` Å
    of one of its atoms, at that water's periodic image next to the piece: the configurations the
    potential's own ML/MM dynamics visited, in the solvent that screens their charges. Ions are
    left out.

    Per frame ``spheres`` spheres around charged residues and ``segments`` contiguous segments
    (:func:`_piece_of_size`): whole residues up to the first that reaches a target size drawn
    uniformly from ``protein_atoms`` (so a piece may hold a residue more), ACE/NME-capped where the
    chain is cut; a piece of more than ``max_atoms`` atoms with its waters is drawn again.
    ``shell_around_caps=False`` searches waters around the kept residues only, leaving the caps
    without their shell (how round 5's data were made; ``datasets/README.md``). Ids
    ``{name}-water-{kind}:{first}-{last}:{residues}/f{frame}``, molecule ``{name}-water`` (one
    split group). Unlabelled; the total charge is AMBER14's."""
    from .cutting import waters_near_points
    from .exploration import run_folder_solvated_frames

    if len(set(frames)) != len(frames):
        raise ValueError(f"frames {frames} repeat a frame: its pieces would share ids")
    topology, all_frames, boxes = run_folder_solvated_frames(folder)
    solute_atoms = [a.index for a in topology.atoms() if not is_water_or_ion(a.residue.name)]
    if solute_atoms != list(range(len(solute_atoms))):
        raise ValueError(f"{folder}: the solute atoms must come before the water and ions")
    solute_top, _ = protein_only(topology, all_frames[0])
    residues = list(solute_top.residues())
    charged = [r.index for r in residues if r.name in ("LYS", "ARG", "ASP", "GLU")]
    if spheres and not charged:
        raise ValueError(f"{folder}: spheres are centred on charged residues, and the protein has none")
    rng = np.random.default_rng(seed)
    oracle = AmberOracle()
    tag = os.path.basename(os.path.normpath(folder))
    out = []
    for f in frames:
        if not 0 <= f < len(all_frames):
            raise ValueError(f"{folder} has {len(all_frames)} saved frames; frame {f} does not exist")
        seen: set = set()
        for kind, count in (("sphere", spheres), ("segment", segments)):
            made = 0
            for _ in range(20 * count):
                if made == count:
                    break
                frame = all_frames[f].copy()
                solute_frame = frame[: len(solute_atoms)]
                target = int(rng.integers(protein_atoms[0], protein_atoms[1] + 1))
                picked = _piece_of_size(solute_top, solute_frame, kind, target, rng, charged)
                keep = _with_existing_caps(residues, picked)
                if tuple(keep) in seen:
                    continue
                piece, xyz = capped_piece(solute_top, solute_frame, keep)
                if shell_around_caps:
                    points = xyz
                else:
                    points = solute_frame[[a.index for i in keep for a in residues[i].atoms()]]
                waters = waters_near_points(topology, frame, points, water_radius, boxes[f])
                if len(xyz) + 3 * len(waters) > max_atoms:
                    continue
                whole, positions = _with_waters(piece, xyz, topology, frame, waters)
                seen.add(tuple(keep))
                where = f"with {len(waters)} waters within {water_radius:g} A, saved frame {{f}} of run {tag}"
                out.append(
                    _piece_structure(
                        oracle, whole, positions, residues, keep, f"{name}-water", name, kind, f, where
                    )
                )
                made += 1
            if made < count:
                raise ValueError(
                    f"frame {f}: found {made} of {count} {kind}s within {max_atoms} atoms; "
                    "lower protein_atoms or water_radius, or raise max_atoms"
                )
    return out

"""Pieces cut out of a structure: H-capped windows of consecutive residues, the neighbourhoods of a
protein's charged groups, and the water molecules of a solvated frame.

The charge of a piece is the formal charge of the residues it holds
(:func:`openmmml_e2former.chemistry.formal_charge`); every piece here is made of whole residues.
Positions in Å. :mod:`.generators` (classical MD frames) and :mod:`.exploration` (frames of ML runs)
both cut their structures with these functions.
"""

from __future__ import annotations

import numpy as np
import torch

from ..caps import cap_bond_length, cap_positions
from ..chemistry import formal_charge, is_water_or_ion
from ..fragments import fragment_ids_from_topology
from .structure import Structure

#: residue names removed to get a protein from a solvated structure (water and the ions OpenMM adds)


def atomic_numbers(topology) -> np.ndarray:
    """Atomic number of every atom of an OpenMM topology."""
    return np.array([a.element.atomic_number for a in topology.atoms()], dtype=np.int64)


def first_appearance(ids) -> np.ndarray:
    """``ids`` renumbered 0, 1, 2, ... in the order each value first appears."""
    seen: dict[int, int] = {}
    return np.array([seen.setdefault(int(i), len(seen)) for i in ids], dtype=np.int64)


def protein_only(topology, positions: np.ndarray):
    """(topology, positions Å) without waters and ions (``chemistry.is_water_or_ion``)."""
    import openmm.app as app
    import openmm.unit as unit

    modeller = app.Modeller(topology, positions * unit.angstrom)
    modeller.delete([r for r in topology.residues() if is_water_or_ion(r.name)])
    return modeller.topology, np.array(modeller.positions.value_in_unit(unit.angstrom))


def cut_window(topology, positions: np.ndarray, residues: list, all_fragments=None):
    """Atoms of ``residues`` (usually consecutive ones) with cut bonds capped by hydrogens.

    Returns (numbers, positions Å, fragment ids, charge): the residues' atoms in topology order,
    then one cap per cut bond. A cut N-C(prev) bond becomes N-H (1.01 Å), a cut C-N(next) bond
    becomes C-H (1.09 Å: ``caps.py``, the rule the OpenMM module uses); each cap joins its
    residue's fragment. The charge is the residues' formal charge.
    """
    inside = {a.index for r in residues for a in r.atoms()}
    index = sorted(inside)
    if all_fragments is None:
        all_fragments = fragment_ids_from_topology(topology)
    numbers = list(atomic_numbers(topology)[index])
    coords = [positions[i] for i in index]
    frag = list(all_fragments[index])
    for a, b in topology.bonds():
        for inner, outer in ((a, b), (b, a)):
            if inner.index in inside and outer.index not in inside:
                if inner.element.symbol == "H":
                    raise ValueError("cannot cap a cut bond at a hydrogen")
                here = torch.as_tensor(positions[inner.index], dtype=torch.float64).view(1, 3)
                there = torch.as_tensor(positions[outer.index], dtype=torch.float64).view(1, 3)
                length = torch.tensor([cap_bond_length(inner.element.atomic_number)], dtype=torch.float64)
                cap = cap_positions(here, there - here, length)
                coords.append(cap[0].numpy())
                numbers.append(1)
                frag.append(all_fragments[inner.index])
    return np.array(numbers), np.array(coords), first_appearance(frag), formal_charge(topology, index)


def cut_structure(topology, frame, residues, fragments, molecule, tag, source) -> Structure:
    """The H-capped ``residues`` of one frame (Å, see :func:`cut_window`) as a structure of
    ``molecule`` with id ``{molecule}/{tag}``."""
    numbers, coords, frag, charge = cut_window(topology, frame, residues, fragments)
    return Structure(
        id=f"{molecule}/{tag}",
        molecule=molecule,
        numbers=numbers,
        positions=coords,
        fragment_ids=frag,
        charge=charge,
        source=source,
    )


def window_structures(
    topology, frame, window, fragments, name, tag, source, stride: int = 1
) -> list[Structure]:
    """H-capped windows of ``window`` consecutive residues of one frame (Å), starting every
    ``stride`` residues: molecule ``{name}:{first}-{last}`` (1-based residue positions), id
    ``{molecule}/{tag}``, and ``source`` formatted with ``first`` and ``last``."""
    residues = list(topology.residues())
    out = []
    for start in range(0, len(residues) - window + 1, stride):
        chunk = residues[start : start + window]
        first, last = start + 1, start + window
        molecule = f"{name}:{first}-{last}"
        source_text = source.format(first=first, last=last)
        out.append(cut_structure(topology, frame, chunk, fragments, molecule, tag, source_text))
    return out


def environment_structures(topology, frames, fragments, radius, name, tag, source) -> list[Structure]:
    """For each protein frame (Å) of ``topology`` and each charged group (:func:`charged_centres`):
    the residues with an atom within ``radius`` Å of the centre atom (:func:`neighbourhood`), cut
    bonds H-capped. Molecules ``{name}-env:{centre}``, ids ``{molecule}/{tag}/f{frame}``;
    ``source`` is formatted with ``centre`` and ``frame`` (", H-capped" appended)."""
    residues = list(topology.residues())
    out = []
    for f, frame in enumerate(frames):
        for label, centre in charged_centres(topology):
            chosen = [residues[i] for i in neighbourhood(topology, frame, centre, radius)]
            text = source.format(centre=label, frame=f) + ", H-capped"
            molecule, where = f"{name}-env:{label}", f"{tag}/f{f}"
            out.append(cut_structure(topology, frame, chosen, fragments, molecule, where, text))
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


def waters(topology) -> list[tuple[int, list[int], int]]:
    """(residue index, atom indices, oxygen index) of every water (``HOH``) residue."""
    out = []
    for residue in topology.residues():
        if residue.name != "HOH":
            continue
        atoms = [a.index for a in residue.atoms()]
        oxygen = next(a.index for a in residue.atoms() if a.element.symbol == "O")
        out.append((residue.index, atoms, oxygen))
    return out


def waters_near_points(
    topology, frame: np.ndarray, points: np.ndarray, radius: float, box: np.ndarray
) -> list[int]:
    """Residue indices of the waters (``HOH``) whose oxygen lies within ``radius`` Å of one of
    ``points`` (Å), each water taken at its periodic image nearest the points' centre (rectangular
    ``box`` lengths, Å); ``frame`` is modified in place to put the chosen waters there. The image
    is the nearest one to every point only while the points reach less than half the box minus
    ``radius`` from their centre: a larger set raises."""
    points = np.asarray(points, dtype=np.float64)
    centre = points.mean(axis=0)
    reach = float(np.linalg.norm(points - centre, axis=1).max())
    if reach + radius >= 0.5 * float(np.min(box)):
        raise ValueError(
            f"the piece reaches {reach:.1f} A from its centre: with a {radius:g} A water shell that is "
            f"more than half the periodic box ({np.min(box):.1f} A), so the nearest image is ambiguous"
        )
    picks = []
    for residue, atoms, oxygen in waters(topology):
        shift = np.round((frame[oxygen] - centre) / box) * box
        if np.linalg.norm(points - (frame[oxygen] - shift), axis=1).min() <= radius:
            frame[atoms] -= shift
            picks.append(residue)
    return picks

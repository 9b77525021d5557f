"""Atom selections with the mdtraj selection language, and a summary of the ML region."""

from __future__ import annotations

import collections
import re

NONE_WORDS = {"none", "mm", ""}


WITHIN = re.compile(r"(residues\s+)?within\s+([0-9.eE+-]+)\s+of\s+(\((?:[^()]|\([^()]*\))*\)|.+)$")


def select_atoms(topology, selection: str, what: str = "selection", positions_nm=None) -> list[int]:
    """Indices (0-based) of the atoms of an OpenMM topology matching an mdtraj selection.

    Besides mdtraj's language, ``within D of SEL`` (atoms within D nm of the atoms of SEL,
    those included) and ``residues within D of SEL`` (whole residues with an atom that
    close) are understood, where SEL is parenthesised or runs to the end of the text;
    they need ``positions_nm`` ((N, 3) array, nm; periodic images are not considered).
    ``"none"`` returns an empty list (pure MM).  A selection that matches nothing, or that
    cannot be parsed, raises a ValueError naming ``what`` and the selection.
    """
    import mdtraj

    text = str(selection).strip()
    if text.lower() in NONE_WORDS:
        return []
    md_top = mdtraj.Topology.from_openmm(topology)
    try:
        expanded = _expand_within(md_top, text, positions_nm)
        indices = md_top.select(expanded)
    except Exception as exc:  # mdtraj raises ValueError/ParseException/KeyError for bad syntax
        raise ValueError(f"cannot parse the {what} {text!r}: {exc}") from None
    if len(indices) == 0:
        raise ValueError(f"the {what} {text!r} matches no atoms of the prepared system")
    return [int(i) for i in indices]


def _expand_within(md_top, text: str, positions_nm) -> str:
    """Replace a ``[residues] within D of SEL`` clause by an explicit ``index ...`` list."""
    import numpy as np

    match = WITHIN.search(text)
    if match is None:
        return text
    if positions_nm is None:
        raise ValueError("'within' needs atom positions")
    whole, distance, inner = match.group(1), float(match.group(2)), match.group(3)
    centre = md_top.select(inner[1:-1] if inner.startswith("(") and inner.endswith(")") else inner)
    positions = np.asarray(positions_nm, dtype=float)
    if len(centre):
        gaps = np.linalg.norm(positions[:, None, :] - positions[None, centre, :], axis=-1).min(axis=1)
        near = np.flatnonzero(gaps <= distance)
    else:
        near = np.array([], dtype=int)
    if whole:
        residues = {md_top.atom(int(i)).residue.index for i in near}
        near = np.array([a.index for a in md_top.atoms if a.residue.index in residues], dtype=int)
    clause = "(index " + " ".join(str(int(i)) for i in near) + ")" if len(near) else "none"
    return text[: match.start()] + clause


def ml_region_summary(topology, indices: list[int], mm_system) -> dict:
    """Atoms, residues, elements, fragments, total charge and cut bonds of an ML region.

    The total charge is the rounded sum of the MM charges of the ML atoms (what the
    potential uses by default); the fragments are those the potential derives from the
    topology (:func:`openmmml_e2former.fragments.fragment_ids_from_topology`).
    """
    import openmm
    import openmm.unit as unit

    from ..export import cut_bonds
    from ..fragments import fragment_ids_from_topology

    if not indices:
        return {"n_atoms": 0}
    atoms = list(topology.atoms())
    chosen = [atoms[i] for i in indices]
    nonbonded = next((f for f in mm_system.getForces() if isinstance(f, openmm.NonbondedForce)), None)
    charge = 0.0
    if nonbonded is not None:  # the potential then falls back to formal charges
        charge = sum(
            nonbonded.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge) for i in indices
        )
    fragments = fragment_ids_from_topology(topology, indices)
    elements = collections.Counter(a.element.symbol if a.element else "?" for a in chosen)
    return {
        "n_atoms": len(indices),
        "n_residues": len({a.residue.index for a in chosen}),
        "elements": dict(sorted(elements.items())),
        "n_fragments": len(set(int(f) for f in fragments)),
        "mm_charge_sum": round(charge, 4),
        "charge": int(round(charge)),
        "link_atoms": len(cut_bonds(topology, set(indices))),
    }


def format_ml_summary(selection: str, summary: dict) -> str:
    if summary["n_atoms"] == 0:
        return "ML region: none (pure MM)"
    elements = " ".join(f"{k}{v}" for k, v in summary["elements"].items())
    return (
        f"ML region {selection!r}: {summary['n_atoms']} atoms in {summary['n_residues']} residues "
        f"({elements}), {summary['n_fragments']} fragments, total charge {summary['charge']:+d} e, "
        f"{summary['link_atoms']} link atom(s)"
    )

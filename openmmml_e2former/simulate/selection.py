"""Atom selections with the mdtraj selection language, and a summary of the ML region."""

from __future__ import annotations

import collections
import re

NONE_WORDS = {"none", "mm", ""}


WITHIN = re.compile(r"\b(residues\s+)?within\s+([0-9.eE+-]+)\s+of\s+")
BOOLEAN = re.compile(r"\b(and|or)\b|&&|\|\|")


def select_atoms(topology, selection: str, what: str = "selection", positions_nm=None) -> list[int]:
    """Indices (0-based) of the atoms of an OpenMM topology matching an mdtraj selection.

    Besides mdtraj's language, ``within D of SEL`` (atoms within D nm of the atoms of SEL,
    those included) and ``residues within D of SEL`` (whole residues with an atom that
    close) are understood.  SEL is parenthesised, or runs to the end of the text (or of the
    parenthesis around the clause) holding no ``and``/``or`` (else a ValueError asks for
    parentheses): ``resname LIG or (protein and residues within 0.6 of resname LIG)``.
    They need ``positions_nm`` ((N, 3) array, nm); when the topology has periodic box vectors,
    distances are taken to the nearest periodic image.
    ``"none"`` returns an empty list (pure MM).  A selection that matches nothing, or that
    cannot be parsed, raises a ValueError naming ``what`` and the selection.
    """
    import mdtraj

    text = str(selection).strip()
    if text.lower() in NONE_WORDS:
        return []
    md_top = mdtraj.Topology.from_openmm(topology)
    try:
        expanded = _expand_within(md_top, text, positions_nm, _box_nm(topology))
        indices = md_top.select(expanded)
    except Exception as exc:  # mdtraj raises ValueError/ParseException/KeyError for bad syntax
        raise ValueError(f"cannot parse the {what} {text!r}: {exc}") from None
    if len(indices) == 0:
        raise ValueError(f"the {what} {text!r} matches no atoms of the prepared system")
    return [int(i) for i in indices]


def _box_nm(topology):
    """The topology's periodic box vectors as a (3, 3) array in nm (rows a, b, c), or None."""
    import numpy as np
    import openmm.unit as unit

    vectors = topology.getPeriodicBoxVectors()
    return None if vectors is None else np.array(vectors.value_in_unit(unit.nanometer), dtype=float)


def _expand_within(md_top, text: str, positions_nm, box_nm=None) -> str:
    """Replace every ``[residues] within D of SEL`` clause by an explicit ``(index ...)`` list.

    The rightmost clause is expanded first, so a SEL holding another clause is already
    explicit when it is evaluated.  SEL is either parenthesised, or runs to the end of the
    text (or of the enclosing parenthesis) and then holds no ``and``/``or``: in
    ``within 0.6 of resid 10 and not water`` it is unclear where SEL ends, so that is an error.
    """
    while True:
        matches = list(WITHIN.finditer(text))
        if not matches:
            return text
        if positions_nm is None:
            raise ValueError("'within' needs atom positions")
        match = matches[-1]
        inner, end = _within_operand(text, match.end())
        near = _atoms_near(md_top, inner, float(match.group(2)), positions_nm, box_nm)
        if match.group(1):
            residues = {md_top.atom(int(i)).residue.index for i in near}
            near = [a.index for a in md_top.atoms if a.residue.index in residues]
        clause = "(index " + " ".join(str(int(i)) for i in near) + ")" if len(near) else "none"
        text = text[: match.start()] + clause + text[end:]


def _within_operand(text: str, start: int) -> tuple[str, int]:
    """SEL of a ``within D of SEL`` clause starting at ``text[start]``, and where SEL ends."""
    if text.startswith("(", start):
        depth = 0
        for pos in range(start, len(text)):
            depth += {"(": 1, ")": -1}.get(text[pos], 0)
            if depth == 0:
                return text[start + 1 : pos], pos + 1
        raise ValueError(f"unbalanced parenthesis after 'of' in {text!r}")
    depth, end = 0, len(text)
    for pos in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[pos], 0)
        if depth < 0:  # the parenthesis enclosing the clause closes
            end = pos
            break
    inner = text[start:end].strip()
    if not inner:
        raise ValueError(f"'within D of' needs a selection after 'of' in {text!r}")
    if BOOLEAN.search(inner):
        raise ValueError(
            f"'within D of {inner}' is ambiguous: put the selection after 'of' in parentheses, "
            f"e.g. 'within D of ({inner})', or '(within D of SEL) and ...' to combine the result"
        )
    return inner, end


def _atoms_near(md_top, inner: str, distance_nm: float, positions_nm, box_nm=None):
    """Indices of the atoms within ``distance_nm`` of the atoms of the selection ``inner`` (included);
    with ``box_nm`` (OpenMM's reduced box, rows a, b, c) to the nearest periodic image."""
    import numpy as np

    centre = md_top.select(inner)
    positions = np.asarray(positions_nm, dtype=float)
    gaps = np.full(len(positions), np.inf)
    for block in range(0, len(centre), 256):  # bounded memory for large systems
        delta = positions[:, None, :] - positions[None, centre[block : block + 256], :]
        if box_nm is not None:
            for k in (2, 1, 0):
                delta = delta - np.round(delta[..., k : k + 1] / box_nm[k, k]) * box_nm[k]
        gaps = np.minimum(gaps, np.linalg.norm(delta, axis=-1).min(axis=1))
    return np.flatnonzero(gaps <= distance_nm)


def ml_region_summary(
    topology, indices: list[int], mm_system, potential_options: dict | None = None, model_metadata=None
) -> dict:
    """Atoms, residues, elements, fragments, total charge and cut bonds of an ML region.

    The total charge is the rounded sum of the MM charges of the ML atoms (what the
    potential uses by default); the fragments are those the potential uses: its explicit
    ``fragmentIds`` or its ``ligandFragments`` mode from ``potential_options`` (the
    protocol's ``potential`` section), whose default depends on the loaded weights
    (``model_metadata``, the potential's ``metadata``: BRICS for the authors' checkpoint).
    """
    import openmm
    import openmm.unit as unit

    from ..export import cut_bonds

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
    fragments = ml_fragment_ids(topology, indices, potential_options or {}, model_metadata or {})
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


def ml_fragment_ids(topology, indices: list[int], options: dict, metadata: dict) -> list[int]:
    """The fragment id of each ML atom, chosen as ``MLPotential('e2former...')`` chooses them."""
    from ..checkpoints import AUTHORS_SOURCE
    from ..potential import _fragment_ids

    default = "brics" if metadata.get("source") == AUTHORS_SOURCE else "residue"
    return _fragment_ids(
        topology, indices, options.get("fragmentIds"), options.get("ligandFragments", default)
    )


def format_ml_summary(selection: str, summary: dict) -> str:
    if summary["n_atoms"] == 0:
        return "ML region: none (pure MM)"
    elements = " ".join(f"{k}{v}" for k, v in summary["elements"].items())
    return (
        f"ML region {selection!r}: {summary['n_atoms']} atoms in {summary['n_residues']} residues "
        f"({elements}), {summary['n_fragments']} fragments, total charge {summary['charge']:+d} e, "
        f"{summary['link_atoms']} link atom(s)"
    )

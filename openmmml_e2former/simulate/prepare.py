"""Structure preparation with pdbfixer and OpenMM's Modeller.

From a PDB/mmCIF file: remove unwanted heterogens (waters, ligands), replace
non-standard residues, add missing heavy atoms (and missing internal residues when
asked), add hydrogens at a pH, then solvate (padding, box shape, water model) with
neutralising ions plus an ionic strength.  Every change is counted in a report dict
that :func:`format_report` turns into lines for the screen and ``prepare.json``.
"""

from __future__ import annotations

import collections
import math
import os

import numpy as np

from ..chemistry import WATER_RESIDUE_NAMES as WATER_NAMES


def load_fixer(path: str):
    """A ``PDBFixer`` for a PDB or mmCIF file, with a clear error if it cannot be read."""
    from pdbfixer import PDBFixer

    if not os.path.isfile(path):
        raise FileNotFoundError(f"structure file not found: {path}")
    try:
        fixer = PDBFixer(filename=path)
    except Exception as exc:  # pdbfixer raises many types for malformed files
        raise ValueError(f"cannot read structure {path}: {type(exc).__name__}: {exc}") from None
    if fixer.topology.getNumAtoms() == 0:
        raise ValueError(f"cannot read structure {path}: it contains no atoms")
    return fixer


def prepare_structure(path: str, options: dict, forcefield, ligand=None) -> tuple:
    """Prepare a structure for simulation.

    Args:
        path: PDB or mmCIF file.
        options: the protocol's ``prepare`` section (see ``protocol.PREPARE_DEFAULTS``).
        forcefield: ``openmm.app.ForceField`` used for hydrogens, the net charge and ions (with
            ``ligand``: including the ligand's template).
        ligand: a :class:`.ligand.PreparedLigand`: its residue is taken out of the input before
            pdbfixer and put back protonated (its hydrogens from the ligand's template) before
            solvation.

    Returns:
        ``(topology, positions, report)``: an ``openmm.app.Topology``, positions (nm, a
        Quantity list) and a dict describing every change.
    """
    import openmm.unit as unit
    from openmm.app import Modeller

    fixer = load_fixer(path)
    report = {"input": os.path.abspath(path), "input_atoms": fixer.topology.getNumAtoms()}
    if ligand is not None:  # removed here, put back protonated below
        options = {
            **options,
            "keep_heterogens": [n for n in options["keep_heterogens"] or [] if n != ligand.resname],
        }
    report["removed_residues"] = _remove_unwanted(fixer, options)
    if ligand is not None:
        report["removed_residues"].pop(ligand.resname, None)
    report["missing_residues_added"] = _missing_residues(fixer, options)
    report["nonstandard_replaced"] = _nonstandard(fixer, options)
    fixer.findMissingAtoms()
    report["missing_heavy_atoms_added"] = sum(len(v) for v in fixer.missingAtoms.values()) + sum(
        len(v) for v in fixer.missingTerminals.values()
    )
    fixer.addMissingAtoms(seed=0)
    before = fixer.topology.getNumAtoms()
    try:
        fixer.addMissingHydrogens(pH=float(options["ph"]), forcefield=forcefield)
    except Exception as exc:
        if "template" in str(exc).lower():
            raise template_error(exc) from None
        raise ValueError(f"adding hydrogens to {path} failed: {exc}") from None
    report["hydrogens_added"] = fixer.topology.getNumAtoms() - before
    report["ph"] = float(options["ph"])
    modeller = Modeller(fixer.topology, fixer.positions)
    if ligand is not None:
        modeller.add(*ligand.topology())
        report["ligand"] = ligand.record | {"summary": ligand.summary()}
    report["solute_atoms"] = modeller.topology.getNumAtoms()
    report["solute_net_charge"] = net_charge(modeller.topology, forcefield)
    if options["solvate"]:
        report.update(_solvate(modeller, forcefield, options))
    report["final_atoms"] = modeller.topology.getNumAtoms()
    vectors = modeller.topology.getPeriodicBoxVectors()
    if vectors is not None:
        report["box_vectors_nm"] = [
            [round(v[k].value_in_unit(unit.nanometer), 4) for k in range(3)] for v in vectors
        ]
    return modeller.topology, modeller.positions, report


def _remove_unwanted(fixer, options: dict) -> dict:
    """Delete waters (unless kept) and heterogens not named in ``keep_heterogens``."""
    from openmm.app import Modeller
    from pdbfixer.pdbfixer import dnaResidues, proteinResidues, rnaResidues

    standard = set(proteinResidues) | set(rnaResidues) | set(dnaResidues)
    keep = {str(n) for n in options["keep_heterogens"] or []}
    removed = collections.Counter()
    doomed = []
    for residue in fixer.topology.residues():
        if residue.name in standard or residue.name in keep:
            continue
        if residue.name in WATER_NAMES and options["keep_water"]:
            continue
        if residue.name in fixer_nonstandard_names(fixer):
            continue  # replaced by its standard parent later
        doomed.append(residue)
        removed[residue.name] += 1
    if doomed:
        modeller = Modeller(fixer.topology, fixer.positions)
        modeller.delete(doomed)
        fixer.topology, fixer.positions = modeller.topology, modeller.positions
    return dict(removed)


def fixer_nonstandard_names(fixer) -> set:
    """Residue names pdbfixer knows how to replace by a standard residue (MSE, HYP, ...)."""
    from pdbfixer.pdbfixer import substitutions

    return set(substitutions)


def _missing_residues(fixer, options: dict) -> int:
    """Keep internal gaps only when asked; terminal tails are never built."""
    fixer.findMissingResidues()
    chains = list(fixer.topology.chains())
    kept = {}
    for (chain_index, residue_index), names in fixer.missingResidues.items():
        n_residues = len(list(chains[chain_index].residues()))
        internal = 0 < residue_index < n_residues
        if internal and options["add_missing_residues"]:
            kept[(chain_index, residue_index)] = names
    fixer.missingResidues = kept
    return sum(len(v) for v in kept.values())


def _nonstandard(fixer, options: dict) -> list[str]:
    fixer.findNonstandardResidues()
    found = [f"{r.name}{r.id}->{name}" for r, name in fixer.nonstandardResidues]
    if options["replace_nonstandard"]:
        fixer.replaceNonstandardResidues()
    return found


def net_charge(topology, forcefield) -> int:
    """Total charge (e) of a topology under a force field, rounded to an integer."""
    import openmm
    import openmm.unit as unit

    system = create_mm_system(forcefield, topology, nonbonded="nocutoff")
    force = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    total = sum(
        force.getParticleParameters(i)[0].value_in_unit(unit.elementary_charge)
        for i in range(system.getNumParticles())
    )
    return int(round(total))


def create_mm_system(forcefield, topology, nonbonded: str = "pme", **kwargs):
    """``forcefield.createSystem`` with the "no template" error turned into a clear ValueError."""
    import openmm.app as app

    method = {"pme": app.PME, "nocutoff": app.NoCutoff}[nonbonded]
    try:
        return forcefield.createSystem(topology, nonbondedMethod=method, **kwargs)
    except ValueError as exc:
        if "template" in str(exc).lower():
            raise template_error(exc) from None
        raise


def template_error(exc: Exception) -> ValueError:
    """The force field's "No template found" error, with what to do about it."""
    return ValueError(
        f"the force field has no template for a residue: {str(exc).splitlines()[0]} "
        "Remove the residue (prepare: keep_heterogens: []), or add a force field XML for it "
        "(system: forcefield: [..., ligand.xml])."
    )


#: smallest diagonal element of the reduced box vectors per unit width, for each of Modeller's
#: box shapes (cube: 1; rhombic dodecahedron: c_z = w/sqrt(2); truncated octahedron: c_z = w*sqrt(6)/3)
BOX_DIAGONAL_FRACTION = {"cube": 1.0, "dodecahedron": math.sqrt(0.5), "octahedron": math.sqrt(6.0) / 3.0}


def padding_for_minimum_box(positions_nm, padding: float, minimum_box_nm: float, box_shape: str) -> float:
    """The padding (nm) to give ``Modeller.addSolvent`` so that every diagonal element of the box
    is at least ``minimum_box_nm``: ``padding`` itself when it already does. Modeller's width is
    ``max(2 * radius + padding, 2 * padding)`` with ``radius`` that of the solute's bounding sphere
    about the centre of its bounding box."""
    if minimum_box_nm <= 0:
        return padding
    xyz = np.asarray(positions_nm, dtype=float).reshape(-1, 3)
    center = 0.5 * (xyz.min(axis=0) + xyz.max(axis=0))
    radius = float(np.linalg.norm(xyz - center, axis=1).max()) if len(xyz) else 0.0
    width = minimum_box_nm / BOX_DIAGONAL_FRACTION[box_shape] + 1e-3
    return max(padding, min(width - 2.0 * radius, width / 2.0))


def _solvate(modeller, forcefield, options: dict) -> dict:
    import openmm.unit as unit

    before = collections.Counter(r.name for r in modeller.topology.residues())
    requested = float(options["padding_nm"])
    minimum = options.get("min_box_nm") or 0.0
    if isinstance(minimum, str):
        raise ValueError("prepare: resolve min_box_nm 'auto' first (simulate.system.resolve_min_box)")
    positions = modeller.getPositions().value_in_unit(unit.nanometer)
    padding = padding_for_minimum_box(positions, requested, minimum, options["box_shape"])
    try:
        modeller.addSolvent(
            forcefield,
            model=options["water_model"],
            padding=padding * unit.nanometer,
            boxShape=options["box_shape"],
            positiveIon=options["positive_ion"],
            negativeIon=options["negative_ion"],
            ionicStrength=float(options["ionic_strength_molar"]) * unit.molar,
            neutralize=True,
        )
    except Exception as exc:
        raise ValueError(f"solvation failed: {exc}") from None
    after = collections.Counter(r.name for r in modeller.topology.residues())
    added = {name: after[name] - before.get(name, 0) for name in after if after[name] > before.get(name, 0)}
    waters = sum(n for name, n in added.items() if name in WATER_NAMES)
    ions = {name: n for name, n in added.items() if name not in WATER_NAMES}
    return {
        "water_model": options["water_model"],
        "box_shape": options["box_shape"],
        "padding_nm": round(padding, 3),
        "padding_requested_nm": requested,
        "min_box_nm": minimum,
        "waters_added": waters,
        "ions_added": ions,
        "ionic_strength_molar": float(options["ionic_strength_molar"]),
    }


def format_report(report: dict) -> list[str]:
    """Human-readable lines describing what preparation changed."""
    removed = ", ".join(f"{n} {name}" for name, n in report["removed_residues"].items()) or "none"
    lines = [
        f"input {report['input']}: {report['input_atoms']} atoms",
        f"removed residues: {removed}",
        f"added: {report['missing_heavy_atoms_added']} missing heavy atoms, "
        f"{report['missing_residues_added']} missing internal residues, "
        f"{report['hydrogens_added']} hydrogens (pH {report['ph']})",
    ]
    if report["nonstandard_replaced"]:
        lines.append(f"non-standard residues: {', '.join(report['nonstandard_replaced'])}")
    if "ligand" in report:
        lines.append(report["ligand"]["summary"])
    lines.append(f"solute: {report['solute_atoms']} atoms, net charge {report['solute_net_charge']:+d} e")
    if "waters_added" in report:
        ions = ", ".join(f"{n} {name}" for name, n in report["ions_added"].items()) or "none"
        if report["padding_nm"] > report["padding_requested_nm"]:
            lines.append(
                f"padding raised from {report['padding_requested_nm']} to {report['padding_nm']} nm: "
                f"the box must be at least {report['min_box_nm']:.2f} nm wide for the ML potential"
            )
        lines.append(
            f"solvated ({report['box_shape']}, {report['padding_nm']} nm padding, {report['water_model']}): "
            f"{report['waters_added']} waters, ions {ions} "
            f"(neutralised + {report['ionic_strength_molar']} M)"
        )
    lines.append(f"prepared system: {report['final_atoms']} atoms")
    return lines

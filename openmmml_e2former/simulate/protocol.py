"""Protocol files: declarative YAML descriptions of a preparation, a system and MD stages.

A protocol is a mapping with the sections ``prepare``, ``system``, ``potential``, ``ml``
and ``stages`` (see ``docs/protocols.md``).  :func:`load_protocol` reads a file (or the
name of a shipped preset such as ``quick-check``), fills in defaults and checks every key
and value, so that a typo is an error naming the key before anything runs.

Units are in the key names: ``_nm``, ``_fs``, ``_ps``, ``_K``, ``_bar``, ``_molar``,
``k_kj_mol_nm2`` (restraint force constants, kJ/mol/nm^2).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

PREPARE_DEFAULTS = {
    "keep_water": False,  # keep crystal waters of the input
    "keep_heterogens": [],  # residue names of ligands/cofactors to keep (others are removed)
    "add_missing_residues": False,  # build missing internal residues (only when asked)
    "replace_nonstandard": True,  # e.g. MSE -> MET
    "ph": 7.0,
    "solvate": True,
    "padding_nm": 1.0,
    # smallest box edge (nm): "auto" = what the ML potential needs (twice its largest cutoff,
    # + 5 % for NPT), raising the padding where a small solute would get a smaller box; 0: none
    "min_box_nm": "auto",
    "box_shape": "cube",  # cube | dodecahedron | octahedron
    "water_model": "tip3p",
    "ionic_strength_molar": 0.15,
    "positive_ion": "Na+",
    "negative_ion": "Cl-",
}
SYSTEM_DEFAULTS = {
    "forcefield": "amber14",  # amber14 | charmm36 | list of ForceField XML files
    "nonbonded_cutoff_nm": 1.0,
    "constraints": "hbonds",  # none | hbonds | allbonds | hangles (applied to the MM region)
    "ml_constraints": "auto",  # X-H constraints inside the ML region: auto (= kept) | true | false
    "hydrogen_mass_amu": None,  # hydrogen mass repartitioning, e.g. 3.0 (None: off)
    "rigid_water": True,
}
POTENTIAL_DEFAULTS = {
    "name": "e2former-lsr",
    "randomInit": "auto",  # auto | true | false (see docs/protocols.md)
    "seed": 0,
    "precision": "single",
}
ML_DEFAULTS = {"selection": "protein"}
#: a ligand kept from the input and parameterised from its SMILES or SDF/MOL2 (docs/ligands.md);
#: selections may then say ``ligand`` for ``resname <resname>``
LIGAND_DEFAULTS = {"resname": None, "smiles": None, "sdf": None}
GUARD_DEFAULTS = {
    "max_temperature_K": 1000.0,
    "max_bond_change": 0.3,  # fraction of the prepared length; null: do not watch ML-region bonds
    "on_bond_change": "stop",  # stop | warn
}
MINIMIZE_DEFAULTS = {
    "type": "minimize",
    "forces": "mixed",  # mixed (ML/MM) | mm (classical force field only, fast)
    "max_iterations": 500,
    "tolerance_kj_mol_nm": 10.0,
    "restraints": [],
}
MD_DEFAULTS = {
    "type": "md",
    "ensemble": "nvt",  # nvt | npt
    "steps": 1000,
    "timestep_fs": 1.0,
    "temperature_K": 300.0,  # a number, or [start, end] for a linear ramp
    "friction_per_ps": 1.0,
    "pressure_bar": 1.0,
    "barostat_interval": 25,
    "restraints": [],
    "schedule_interval": None,  # steps between temperature/restraint updates (default steps/20)
    "initial_velocities": "auto",  # auto (new if the previous stage was a minimisation) | true | false
    "report_interval": 100,  # state CSV
    "trajectory_interval": 100,
    "trajectory_format": "dcd",
    "checkpoint_interval": 1000,
}
MAX_SEED = 2_000_000_000  # stage i uses random_seed + i, an OpenMM int seed (0 would mean "random")
RESTRAINT_KEYS = {"selection", "k_kj_mol_nm2", "k_end_kj_mol_nm2"}
SECTIONS = {
    "name",
    "description",
    "prepare",
    "system",
    "potential",
    "ml",
    "ligand",
    "guard",
    "platform",
    "random_seed",
    "stages",
}


@dataclass
class Protocol:
    """A validated protocol; every section is a plain dict with all defaults filled in."""

    name: str
    description: str
    prepare: dict
    system: dict
    potential: dict
    ml: dict
    guard: dict
    platform: str
    ligand: dict = field(default_factory=lambda: dict(LIGAND_DEFAULTS))
    stages: list[dict] = field(default_factory=list)
    random_seed: int | None = None
    source: str = ""

    def to_dict(self) -> dict:
        ligand = {"ligand": self.ligand} if any(self.ligand.values()) else {}  # older run folders lack it
        return {
            **ligand,
            "name": self.name,
            "description": self.description,
            "prepare": self.prepare,
            "system": self.system,
            "potential": self.potential,
            "ml": self.ml,
            "guard": self.guard,
            "platform": self.platform,
            "random_seed": self.random_seed,
            "stages": self.stages,
        }


def protocols_dir() -> str:
    """Folder of the shipped presets (inside the package; ``protocols/`` of a clone links to it)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "protocols")


def list_presets() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(protocols_dir()) if f.endswith(".yaml"))


def resolve_protocol_path(name_or_path: str) -> str:
    """A file path, or the name of a shipped preset (``quick-check`` or ``quick-check.yaml``)."""
    if os.path.isfile(name_or_path):
        return name_or_path
    base = os.path.basename(name_or_path)
    stem = base[:-5] if base.endswith(".yaml") else base
    shipped = os.path.join(protocols_dir(), f"{stem}.yaml")
    if os.path.dirname(name_or_path) in ("", "protocols") and os.path.isfile(shipped):
        return shipped
    raise FileNotFoundError(
        f"protocol {name_or_path!r} not found: give a YAML file or one of the presets {list_presets()}"
    )


def load_protocol(name_or_path: str) -> Protocol:
    """Read and validate a protocol file or shipped preset."""
    import yaml

    path = resolve_protocol_path(name_or_path)
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise ValueError(f"protocol {path} is not valid YAML: {exc}") from None
    protocol = protocol_from_dict(data, where=path)
    protocol.source = os.path.abspath(path)
    return protocol


def protocol_from_dict(data, where: str = "protocol") -> Protocol:
    """Validate a protocol given as a dict (e.g. from a notebook) and fill in the defaults."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a protocol must be a mapping with a 'stages' list")
    _check_keys(data, SECTIONS, where)
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ValueError(f"{where}: 'stages' must be a non-empty list")
    checked = [_stage(stage, i, where) for i, stage in enumerate(stages)]
    names = [s["name"] for s in checked]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: stage names must be unique, got {names}")
    protocol = Protocol(
        name=str(data.get("name", os.path.splitext(os.path.basename(where))[0])),
        description=str(data.get("description", "")).strip(),
        prepare=_section(data, "prepare", PREPARE_DEFAULTS, where),
        system=_section(data, "system", SYSTEM_DEFAULTS, where),
        potential=_potential(data.get("potential") or {}, where),
        ml=_section(data, "ml", ML_DEFAULTS, where),
        guard=_section(data, "guard", GUARD_DEFAULTS, where),
        ligand=_section(data, "ligand", LIGAND_DEFAULTS, where),
        platform=str(data.get("platform", "auto")),
        stages=checked,
        random_seed=_random_seed(data.get("random_seed"), where),
    )
    _check_values(protocol, where)
    return protocol


def _random_seed(value, where: str) -> int | None:
    """``random_seed``: null (a new random seed each time) or an integer 1..MAX_SEED (reproducible)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_SEED:
        raise ValueError(f"{where}: random_seed must be an integer 1..{MAX_SEED} or null, not {value!r}")
    return value


def _check_keys(data: dict, allowed: set, where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _section(data: dict, key: str, defaults: dict, where: str) -> dict:
    given = data.get(key) or {}
    if not isinstance(given, dict):
        raise ValueError(f"{where}: '{key}' must be a mapping")
    _check_keys(given, set(defaults), f"{where} [{key}]")
    return {**copy.deepcopy(defaults), **given}


def _potential(given: dict, where: str) -> dict:
    """The potential section: ``name`` and ``randomInit`` are ours, every other key is passed
    to ``MLPotential`` unchanged (precision, backend, fragmentSelection, modelPath, ...)."""
    if not isinstance(given, dict):
        raise ValueError(f"{where}: 'potential' must be a mapping")
    options = {**POTENTIAL_DEFAULTS, **given}
    if str(options["randomInit"]).lower() not in ("auto", "true", "false"):
        raise ValueError(f"{where} [potential]: randomInit must be auto, true or false")
    return options


def _stage(stage, index: int, where: str) -> dict:
    if not isinstance(stage, dict) or "name" not in stage:
        raise ValueError(f"{where}: stage {index + 1} must be a mapping with a 'name'")
    kind = stage.get("type", "md")
    label = f"{where} [stage {stage['name']!r}]"
    if kind not in ("minimize", "md"):
        raise ValueError(f"{label}: type must be 'minimize' or 'md', not {kind!r}")
    defaults = MINIMIZE_DEFAULTS if kind == "minimize" else MD_DEFAULTS
    _check_keys(stage, set(defaults) | {"name"}, label)
    merged = {**copy.deepcopy(defaults), **stage}
    merged["restraints"] = [_restraint(r, label) for r in merged["restraints"] or []]
    if kind == "md":
        _check_md_stage(merged, label)
    elif merged["forces"] not in ("mixed", "mm"):
        raise ValueError(f"{label}: forces must be 'mixed' or 'mm'")
    return merged


def _restraint(item, label: str) -> dict:
    if not isinstance(item, dict) or "selection" not in item or "k_kj_mol_nm2" not in item:
        raise ValueError(f"{label}: each restraint needs 'selection' and 'k_kj_mol_nm2'")
    _check_keys(item, RESTRAINT_KEYS, label + " restraint")
    k = float(item["k_kj_mol_nm2"])
    k_end = float(item.get("k_end_kj_mol_nm2", k))
    if k < 0 or k_end < 0:
        raise ValueError(f"{label}: restraint force constants must be >= 0")
    return {"selection": str(item["selection"]), "k_kj_mol_nm2": k, "k_end_kj_mol_nm2": k_end}


def _check_md_stage(stage: dict, label: str) -> None:
    if stage["ensemble"] not in ("nvt", "npt"):
        raise ValueError(f"{label}: ensemble must be 'nvt' or 'npt'")
    for key in (
        "steps",
        "report_interval",
        "trajectory_interval",
        "checkpoint_interval",
        "barostat_interval",
    ):
        if not isinstance(stage[key], int) or stage[key] <= 0:
            raise ValueError(f"{label}: {key} must be a positive integer, not {stage[key]!r}")
    interval = stage["schedule_interval"]
    if interval is not None and (
        isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0
    ):
        raise ValueError(f"{label}: schedule_interval must be a positive integer or null, not {interval!r}")
    for key, minimum, strict in (
        ("timestep_fs", 0, True),
        ("friction_per_ps", 0, False),
        ("pressure_bar", 0, True),
    ):
        _check_number(stage, key, minimum, strict, label)
    temps = stage["temperature_K"]
    temps = temps if isinstance(temps, list) else [temps, temps]
    if len(temps) != 2 or min(float(t) for t in temps) <= 0:
        raise ValueError(f"{label}: temperature_K must be a number or [start, end], all > 0")
    stage["temperature_K"] = [float(t) for t in temps]
    if stage["trajectory_format"] not in ("dcd", "xtc"):
        raise ValueError(f"{label}: trajectory_format must be 'dcd' or 'xtc'")
    if str(stage["initial_velocities"]).lower() not in ("auto", "true", "false"):
        raise ValueError(f"{label}: initial_velocities must be auto, true or false")


def _check_number(stage: dict, key: str, minimum: float, strict: bool, label: str) -> None:
    """``stage[key]`` must be a finite number > minimum (``strict``) or >= minimum; stored as float."""
    import math

    value = stage[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        raise ValueError(
            f"{label}: {key} must be a number {'>' if strict else '>='} {minimum:g}, not {value!r}"
        )
    stage[key] = float(value)


def _check_values(protocol: Protocol, where: str) -> None:
    prep, system = protocol.prepare, protocol.system
    if prep["box_shape"] not in ("cube", "dodecahedron", "octahedron"):
        raise ValueError(f"{where} [prepare]: box_shape must be cube, dodecahedron or octahedron")
    if prep["solvate"] and float(prep["padding_nm"]) <= 0:
        raise ValueError(f"{where} [prepare]: padding_nm must be > 0")
    box = prep["min_box_nm"]
    if str(box).lower() != "auto" and (isinstance(box, bool) or not isinstance(box, (int, float)) or box < 0):
        raise ValueError(f"{where} [prepare]: min_box_nm must be 'auto' or a number of nm >= 0, not {box!r}")
    if float(prep["ionic_strength_molar"]) < 0:
        raise ValueError(f"{where} [prepare]: ionic_strength_molar must be >= 0")
    if system["constraints"] not in ("none", "hbonds", "allbonds", "hangles"):
        raise ValueError(f"{where} [system]: constraints must be none, hbonds, allbonds or hangles")
    if str(system["ml_constraints"]).lower() not in ("auto", "true", "false"):
        raise ValueError(f"{where} [system]: ml_constraints must be auto, true or false")
    _check_guard(protocol.guard, where)
    check_ligand(protocol.ligand, f"{where} [ligand]")
    if protocol.platform not in ("auto", "CUDA", "OpenCL", "CPU", "Reference"):
        raise ValueError(f"{where}: platform must be auto, CUDA, OpenCL, CPU or Reference")


def _check_guard(guard: dict, where: str) -> None:
    limit = guard["max_bond_change"]
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 < limit
    ):
        raise ValueError(
            f"{where} [guard]: max_bond_change must be a fraction > 0 (e.g. 0.3) or null, not {limit!r}"
        )
    if guard["on_bond_change"] not in ("stop", "warn"):
        raise ValueError(
            f"{where} [guard]: on_bond_change must be stop or warn, not {guard['on_bond_change']!r}"
        )


def check_ligand(ligand: dict, where: str) -> None:
    """``resname`` names the ligand's residue; at most one of ``smiles`` and ``sdf`` gives its
    chemistry (neither: the force field files must have a template for it)."""
    name = ligand.get("resname")
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 3):
        raise ValueError(
            f"{where}: resname must be the ligand's residue name (1-3 characters, as PDB files hold it), "
            f"not {name!r}"
        )
    if ligand.get("smiles") and ligand.get("sdf"):
        raise ValueError(f"{where}: give smiles or sdf, not both")
    if (ligand.get("smiles") or ligand.get("sdf")) and not name:
        raise ValueError(f"{where}: smiles/sdf need resname, the ligand's residue name in the structure file")


def with_ligand_words(protocol: Protocol, selection: str) -> tuple[Protocol, str]:
    """``protocol`` and ``selection`` with the word ``ligand`` in every selection (the ML region,
    restraints) replaced by ``(resname <ligand.resname>)``; an error when there is no ligand."""
    import re

    pattern = re.compile(r"\bligand\b")
    name = protocol.ligand.get("resname")

    def expand(text: str, what: str) -> str:
        if not pattern.search(str(text)):
            return text
        if not name:
            raise ValueError(
                f"the {what} {text!r} names 'ligand', but no ligand is given (--ligand RESNAME, or the "
                "protocol's ligand: resname)"
            )
        return pattern.sub(f"(resname {name})", str(text))

    out = copy.deepcopy(protocol)
    for stage in out.stages:
        for restraint in stage.get("restraints", []):
            restraint["selection"] = expand(
                restraint["selection"], f"restraint selection of stage {stage['name']!r}"
            )
    out.ml["selection"] = expand(out.ml["selection"], "ML selection")
    return out, expand(selection, "ML selection")

"""The classical system, the ML region and the per-stage additions (restraints, barostat).

The base system is an OpenMM ForceField system (PME, X-H constraints, optional hydrogen
mass repartitioning) in which the ML atoms' internal MM terms are replaced by
E2Former-LSR through ``MLPotential.createMixedSystem``.  Stages add positional restraints
(:func:`add_restraints`) and a Monte Carlo barostat (:func:`add_barostat`) to a copy.
"""

from __future__ import annotations

import warnings

FORCEFIELDS = {
    "amber14": {
        "tip3p": ["amber14-all.xml", "amber14/tip3pfb.xml"],
        "tip4pew": ["amber14-all.xml", "amber14/tip4pew.xml"],
        "spce": ["amber14-all.xml", "amber14/spce.xml"],
        "opc": ["amber14-all.xml", "amber14/opc.xml"],
    },
    "charmm36": {
        "tip3p": ["charmm36.xml", "charmm36/water.xml"],
        "spce": ["charmm36.xml", "charmm36/spce.xml"],
        "tip4pew": ["charmm36.xml", "charmm36/tip4pew.xml"],
    },
}
RANDOM_WARNING = (
    "WARNING: no trained E2Former-LSR weights are shipped with this installation; the ML region "
    "uses a seeded RANDOM network (plumbing and timing only, NOT physics). Set potential.modelPath "
    "in the protocol, or randomInit: false to refuse running without weights."
)


def forcefield_files(system_options: dict, water_model: str) -> list[str]:
    """The ForceField XML files for a protocol's ``system.forcefield`` and water model."""
    name = system_options["forcefield"]
    if isinstance(name, list):
        return [str(f) for f in name]
    if name not in FORCEFIELDS:
        raise ValueError(f"unknown force field {name!r}: use {sorted(FORCEFIELDS)} or a list of XML files")
    if water_model not in FORCEFIELDS[name]:
        raise ValueError(
            f"force field {name!r} has no water model {water_model!r}: {sorted(FORCEFIELDS[name])}"
        )
    return FORCEFIELDS[name][water_model]


def load_forcefield(files: list[str]):
    import openmm.app as app

    try:
        return app.ForceField(*files)
    except Exception as exc:
        raise ValueError(f"cannot load force field files {files}: {exc}") from None


def build_mm_system(forcefield, topology, options: dict):
    """The classical system: PME, the cutoff, constraints and hydrogen mass of ``options``."""
    import openmm.app as app
    import openmm.unit as unit

    from .prepare import create_mm_system

    if topology.getPeriodicBoxVectors() is None:
        raise ValueError("the prepared structure has no periodic box: solvate it (prepare: solvate: true)")
    cutoff = float(options["nonbonded_cutoff_nm"])
    _check_box(topology, 2 * cutoff, f"twice the {cutoff} nm nonbonded cutoff")
    constraints = {"none": None, "hbonds": app.HBonds, "allbonds": app.AllBonds, "hangles": app.HAngles}
    kwargs = {
        "nonbondedCutoff": cutoff * unit.nanometer,
        "constraints": constraints[options["constraints"]],
        "rigidWater": bool(options["rigid_water"]),
    }
    if options["hydrogen_mass_amu"]:
        kwargs["hydrogenMass"] = float(options["hydrogen_mass_amu"]) * unit.amu
    return create_mm_system(forcefield, topology, nonbonded="pme", **kwargs)


def _check_box(topology, minimum_nm: float, reason: str) -> None:
    import openmm.unit as unit

    vectors = topology.getPeriodicBoxVectors()
    widths = [vectors[k][k].value_in_unit(unit.nanometer) for k in range(3)]
    if min(widths) < minimum_nm:
        raise ValueError(
            f"periodic box too small: widths {[round(w, 3) for w in widths]} nm, every edge must be at "
            f"least {minimum_nm:.2f} nm ({reason}); increase prepare.padding_nm"
        )


def resolve_potential(options: dict) -> tuple[str, dict, bool]:
    """``(name, MLPotential keyword arguments, is_random)`` for a protocol's ``potential``.

    ``randomInit: auto`` uses ``modelPath`` if given, else the shipped weights of ``name``
    (or ``<name>.pt`` in the weights cache) if they exist, else a seeded random network with
    a loud warning; ``true`` always uses the random network; ``false`` requires weights
    (MLPotential's error says how to get them).
    """
    from ..potential import has_default_weights

    name = str(options["name"])
    kwargs = {k: v for k, v in options.items() if k not in ("name", "randomInit", "seed")}
    mode = str(options["randomInit"]).lower()
    random = mode == "true" or (
        mode == "auto" and not options.get("modelPath") and not has_default_weights(name)
    )
    if random:
        kwargs.update(randomInit=True, seed=int(options.get("seed", 0)))
    return name, kwargs, random


#: headroom on the potential's minimum box edge: an NPT box shrinks a few % as fresh solvent settles
NPT_BOX_MARGIN = 0.05


def resolve_min_box(prepare: dict, potential: dict, ml_selected: bool) -> dict:
    """``prepare`` with ``min_box_nm: auto`` replaced by a number: twice the largest cutoff of
    the network the ``potential`` section loads, + :data:`NPT_BOX_MARGIN`, when there is an
    ML region; 0 for a classical run."""
    if str(prepare.get("min_box_nm", "auto")).lower() != "auto":
        return prepare
    minimum = 0.0
    if ml_selected:
        from ..potential import model_max_cutoff

        name, kwargs, _ = resolve_potential(potential)
        minimum = round(2.0 * model_max_cutoff(name, **kwargs) / 10.0 * (1.0 + NPT_BOX_MARGIN), 3)
    return {**prepare, "min_box_nm": minimum}


def build_mixed_system(
    topology, mm_system, ml_atoms: list[int], potential: dict, ml_constraints, metadata: dict | None = None
):
    """The ML/MM system; ``mm_system`` itself when ``ml_atoms`` is empty (pure MM).

    Args:
        ml_constraints: keep the MM constraints inside the ML region (bool; the caller resolves
            ``auto`` with :func:`keep_ml_constraints`).
        metadata: if given, updated with what the potential loaded (its ``metadata``: file,
            source, ...), e.g. for :func:`selection.ml_region_summary`.
    """
    if not ml_atoms:
        return mm_system
    from openmmml import MLPotential

    from ..potential import ensure_torch_plugins

    ensure_torch_plugins()
    name, kwargs, _ = resolve_potential(potential)
    check_backend_for_protocols(kwargs.get("backend"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ml = MLPotential(name, **kwargs)
    from ..export import cut_bonds

    if cut_bonds(topology, ml_atoms) and _openmmml_adds_link_particles():
        system = _mixed_system_with_caps_in_model(ml, topology, mm_system, ml_atoms, not ml_constraints)
    else:
        system = ml.createMixedSystem(topology, mm_system, ml_atoms, removeConstraints=not ml_constraints)
    if metadata is not None:
        metadata.update(getattr(getattr(ml, "_impl", None), "metadata", None) or {})
    return system


def check_backend_for_protocols(backend) -> None:
    """Protocols copy the System for every stage and save it as XML; under openmm >= 8.6 a
    TorchForce cannot be deserialised (the process would crash), so refuse it up front."""
    import openmm

    from ..potential import torchforce_cannot_be_copied

    if backend == "torchforce" and torchforce_cannot_be_copied():
        raise ValueError(
            f"potential.backend 'torchforce' cannot run protocols under openmm {openmm.__version__}: "
            "every stage copies the System and a TorchForce cannot be deserialised there (it "
            "crashes the process). Use backend 'pythonforce' (the default on this openmm) or the "
            "pinned stack (README, 'Install')"
        )


def _openmmml_adds_link_particles() -> bool:
    """openmm-ml >= 1.8 caps bonds cut by the ML region with virtual-site particles."""
    from importlib.metadata import version

    return tuple(int(part) for part in version("openmmml").split(".")[:2]) >= (1, 8)


def _mixed_system_with_caps_in_model(ml, topology, mm_system, ml_atoms: list[int], remove_constraints: bool):
    """openmm-ml 1.8's mechanical embedding without its link-atom particles.

    Protocols carry one Topology and one set of positions through every stage, report and
    restart, so an ML region that cuts bonds keeps its caps inside the model, as on the
    pinned stack (``docs/mixed-system.md``): the MM bonded terms wholly inside the ML region
    are removed, every ML pair is excluded from the MM nonbonded forces (the network has no
    periodic long-range electrostatics: ``getMLLongRange()`` is False), and the plug-in adds
    its force on the ML atoms. Built with openmm-ml's own helpers.
    """
    import openmm
    from openmmml.embeddings import utilities

    atoms = [int(a) for a in ml_atoms]
    system = utilities.removeBonds(mm_system, topology, atoms, True)
    periodic = system.usesPeriodicBoundaryConditions()
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            for i in range(len(atoms)):
                for j in range(i):
                    force.addException(atoms[i], atoms[j], 0.0, 1.0, 0.0, True)
            force.setExceptionsUsePeriodicBoundaryConditions(periodic)
        elif isinstance(force, openmm.CustomNonbondedForce):
            utilities.addCustomNonbondedExclusions(force, atoms)
    ml._impl.addForces(topology, system, atoms, 0)
    if remove_constraints:
        selected = set(atoms)
        for index in reversed(range(system.getNumConstraints())):
            p1, p2, _ = system.getConstraintParameters(index)
            if p1 in selected and p2 in selected:
                system.removeConstraint(index)
    return system


def keep_ml_constraints(setting) -> bool:
    """Resolve ``system.ml_constraints``: ``auto`` and ``true`` keep the X-H constraints inside the ML
    region, ``false`` makes it flexible. A random network holds no bonds, and the shipped potential's
    gas-phase reference does not hold every charged group's protons inside a protein
    (``docs/protocols.md``), so ``auto`` keeps them for both."""
    return str(setting).lower() != "false"


def add_restraints(system, topology, positions_nm, restraints: list[dict]) -> list[str]:
    """Add one harmonic positional restraint force per entry; return their global parameter names.

    Energy ``0.5 * k * d^2`` with ``d`` the periodic distance (nm) of each selected atom to
    its reference position (``positions_nm``, an (N, 3) array in nm) and ``k`` (kJ/mol/nm^2)
    a global parameter the engine changes during a stage (tapering).
    """
    import openmm

    from .selection import select_atoms

    names = []
    for i, item in enumerate(restraints):
        name = f"k_restraint_{i}"
        force = openmm.CustomExternalForce(f"0.5*{name}*periodicdistance(x, y, z, x0, y0, z0)^2")
        force.addGlobalParameter(name, float(item["k_kj_mol_nm2"]))
        for p in ("x0", "y0", "z0"):
            force.addPerParticleParameter(p)
        for atom in select_atoms(
            topology, item["selection"], what="restraint selection", positions_nm=positions_nm
        ):
            force.addParticle(atom, [float(x) for x in positions_nm[atom]])
        system.addForce(force)
        names.append(name)
    return names


def add_barostat(system, pressure_bar: float, temperature_k: float, interval: int) -> None:
    import openmm
    import openmm.unit as unit

    system.addForce(openmm.MonteCarloBarostat(pressure_bar * unit.bar, temperature_k * unit.kelvin, interval))


def choose_platform(name: str | None):
    """The named OpenMM platform, or the fastest available (CUDA > OpenCL > CPU > Reference)."""
    import openmm

    available = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if name and name != "auto":
        if name not in available:
            raise ValueError(f"OpenMM platform {name!r} is not available here; available: {available}")
        return openmm.Platform.getPlatformByName(name)
    for candidate in ("CUDA", "OpenCL", "CPU", "Reference"):
        if candidate in available:
            return openmm.Platform.getPlatformByName(candidate)
    raise RuntimeError("no OpenMM platform available")


def degrees_of_freedom(system) -> int:
    """3N minus constraints minus 3 for a centre-of-mass motion remover (massless atoms excluded)."""
    import openmm

    n = sum(1 for i in range(system.getNumParticles()) if system.getParticleMass(i)._value > 0)
    dof = 3 * n - system.getNumConstraints()
    if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()):
        dof -= 3
    return dof

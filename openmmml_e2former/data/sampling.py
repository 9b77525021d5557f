"""Conformers from short classical MD with OpenMM (AMBER14; vacuum, OBC2 implicit or explicit water).

Positions in and out are in Angstrom.
"""

from __future__ import annotations

import numpy as np


def make_system(topology, solvent: str = "obc2", constraints=None):
    """AMBER14 system: ``solvent`` 'vacuum' / 'obc2' (no cutoff) or 'explicit' (PME, TIP3P-FB)."""
    import openmm.app as app
    import openmm.unit as unit

    if solvent == "explicit":
        forcefield = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
        return forcefield.createSystem(
            topology, nonbondedMethod=app.PME, nonbondedCutoff=0.8 * unit.nanometer, constraints=app.HBonds
        )
    files = ["amber14-all.xml"] + (["implicit/obc2.xml"] if solvent == "obc2" else [])
    if solvent not in ("obc2", "vacuum"):
        raise ValueError(f"solvent must be 'vacuum', 'obc2' or 'explicit', not {solvent!r}")
    forcefield = app.ForceField(*files)
    return forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=constraints)


def minimized(topology, positions: np.ndarray, solvent: str = "vacuum", iterations: int = 500) -> np.ndarray:
    """``positions`` (Å) after an AMBER14 energy minimisation (``solvent`` as in :func:`make_system`)."""
    import openmm
    import openmm.unit as unit

    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(make_system(topology, solvent), openmm.VerletIntegrator(0.001), platform)
    context.setPositions(positions * 0.1)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, iterations)
    state = context.getState(getPositions=True)
    return np.array(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))


def md_frames(
    topology,
    positions: np.ndarray,
    num_frames: int,
    temperature: float = 500.0,
    interval: int = 200,
    equilibration: int = 1000,
    timestep_fs: float = 0.5,
    solvent: str = "obc2",
    seed: int = 0,
    box=None,
) -> list[np.ndarray]:
    """``num_frames`` snapshots ``[N, 3]`` (Å) every ``interval`` steps of Langevin MD at ``temperature`` K.

    The structure is minimised first; ``timestep_fs`` 0.5 fs keeps unconstrained X-H bonds stable
    (explicit solvent uses HBonds constraints and should be given 1-2 fs).
    """
    return langevin_frames(
        make_system(topology, solvent),
        positions * 0.1,
        num_frames,
        temperature,
        interval,
        timestep_fs,
        equilibration=equilibration,
        seed=seed,
        box=box,
    )


def langevin_frames(
    system,
    positions_nm,
    num_frames: int,
    temperature: float,
    interval: int,
    timestep_fs: float,
    friction: float = 5.0,
    equilibration: int = 0,
    minimize_iterations: int = 200,
    seed: int = 0,
    threads: int = 1,
    box=None,
) -> list[np.ndarray]:
    """Frames (Å) of LangevinMiddle MD of an OpenMM ``system`` on the CPU platform: from
    ``positions_nm`` (whatever ``Context.setPositions`` takes), ``minimize_iterations`` of energy
    minimisation (tolerance 10 kJ/mol/nm), velocities at ``temperature`` K, ``equilibration`` steps,
    then a frame every ``interval`` steps (``friction`` per ps, random seeds ``seed + 1``,
    positions as integrated: not wrapped into the periodic box)."""
    import openmm
    import openmm.unit as unit

    integrator = openmm.LangevinMiddleIntegrator(
        temperature * unit.kelvin, friction / unit.picosecond, timestep_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(seed + 1)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, platform, {"Threads": str(threads)})
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    context.setPositions(positions_nm)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, minimize_iterations)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, seed + 1)
    if equilibration:
        integrator.step(equilibration)
    frames = []
    for _ in range(num_frames):
        integrator.step(interval)
        state = context.getState(getPositions=True, enforcePeriodicBox=False)
        frames.append(np.array(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)))
    return frames

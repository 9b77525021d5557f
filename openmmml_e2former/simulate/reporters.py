"""OpenMM reporters of the engine: a blow-up guard and a progress bar (steps, ns/day, ETA)."""

from __future__ import annotations

import math
import sys
import time

MOLAR_GAS_CONSTANT = 8.314462618e-3  # kJ/mol/K


class SimulationError(RuntimeError):
    """A stage stopped because the simulation blew up (NaN, runaway temperature, broken bond)."""


class GuardReporter:
    """Stops a stage when energies or positions stop being finite, the temperature runs away, or
    (with a :class:`BondWatch`) an ML-region bond breaks.

    Put it first in ``simulation.reporters``: OpenMM calls reporters in order, so the
    trajectory and CSV reporters never record the bad frame.
    """

    def __init__(self, interval: int, stage: str, dof: int, max_temperature_k: float, bonds=None):
        self.interval = int(interval)
        self.stage = stage
        self.dof = dof
        self.max_temperature_k = float(max_temperature_k)
        self.bonds = bonds  # a BondWatch, or None

    def describeNextReport(self, simulation):
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": None, "include": ["positions", "energy"]}

    def report(self, simulation, state):
        problem = state_problem(state, self.dof, self.max_temperature_k)
        if not problem and self.bonds is not None:
            problem = self.bonds.problem(state)
        if problem:
            raise SimulationError(f"stage {self.stage!r} blew up at step {simulation.currentStep}: {problem}")


def state_problem(state, dof: int, max_temperature_k: float) -> str | None:
    """Why a State (with energy and positions) is unusable, or None if it is fine."""
    import numpy as np
    import openmm.unit as unit

    potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    if not (math.isfinite(potential) and math.isfinite(kinetic)):
        return f"energy is not finite (potential {potential}, kinetic {kinetic} kJ/mol)"
    if not np.isfinite(state.getPositions(asNumpy=True)._value).all():
        return "positions are not finite"
    temperature = 2 * kinetic / (dof * MOLAR_GAS_CONSTANT) if dof > 0 else 0.0
    if temperature > max_temperature_k:
        return f"temperature {temperature:.0f} K exceeds guard.max_temperature_K = {max_temperature_k:.0f} K"
    return None


class ProgressReporter:
    """A tqdm bar per stage: steps done, ns/day, temperature, and tqdm's ETA."""

    def __init__(
        self, stage: str, total_steps: int, start_step: int, timestep_fs: float, dof: int, enabled=True
    ):
        from tqdm import tqdm

        self.interval = max(1, min(100, total_steps // 50))
        self.timestep_fs = timestep_fs
        self.dof = dof
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            desc=f"  {stage}",
            unit="step",
            file=sys.stderr,
            disable=not enabled,
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 10.0,
        )
        self.last_step = start_step
        self.started = time.perf_counter()
        self.start_step = start_step

    def describeNextReport(self, simulation):
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": None, "include": ["energy"]}

    def report(self, simulation, state):
        import openmm.unit as unit

        step = simulation.currentStep
        self.bar.update(step - self.last_step)
        self.last_step = step
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temperature = 2 * kinetic / (self.dof * MOLAR_GAS_CONSTANT) if self.dof > 0 else 0.0
        self.bar.set_postfix_str(f"{self.ns_per_day():.3g} ns/day, T {temperature:.0f} K", refresh=False)

    def ns_per_day(self) -> float:
        elapsed = time.perf_counter() - self.started
        done = self.last_step - self.start_step
        return done * self.timestep_fs * 1e-6 / elapsed * 86400 if elapsed > 0 and done > 0 else 0.0

    def close(self) -> None:
        self.bar.close()


class BondWatch:
    """Watches the covalent bonds of the ML region (an ML potential can break or form bonds; a
    force field cannot) against their lengths in the prepared structure.

    ``problem(state)`` names the bonds whose length changed by more than ``max_change`` (a
    fraction): in ``stop`` mode it returns that description (the guard stops the stage), in
    ``warn`` mode it calls ``notify`` once per newly broken bond and returns None.
    """

    def __init__(self, topology, atoms, reference_nm, max_change: float, action: str, notify=print):
        import numpy as np

        from ..bonds import bond_lengths, bond_pairs

        self.pairs = bond_pairs(topology, atoms)
        labels = [_atom_label(a) for a in topology.atoms()]
        self.names = [f"{labels[i]}-{labels[j]}" for i, j in self.pairs]
        self.reference = bond_lengths(np.asarray(reference_nm, dtype=float), self.pairs)
        self.max_change = float(max_change)
        self.action = action
        self.notify = notify
        self.reported: set[int] = set()

    def broken(self, positions_nm, box_nm=None) -> list[int]:
        """Indices (into ``pairs``) of the bonds changed by more than ``max_change``."""
        import numpy as np

        from ..bonds import bond_change

        if not len(self.pairs):
            return []
        change = bond_change(np.asarray(positions_nm, dtype=float), self.pairs, self.reference, box_nm)
        return [int(k) for k in np.flatnonzero(change > self.max_change)]

    def problem(self, state) -> str | None:
        import numpy as np

        positions = np.asarray(state.getPositions(asNumpy=True)._value, dtype=float)
        vectors = state.getPeriodicBoxVectors()
        box = None if vectors is None else np.array(vectors._value)
        broken = self.broken(positions, box)
        if self.action == "warn":
            broken = [k for k in broken if k not in self.reported]
            self.reported.update(broken)
        if not broken:
            return None
        from ..bonds import bond_lengths

        lengths = bond_lengths(positions, self.pairs, box)
        described = ", ".join(
            f"{self.names[k]} {lengths[k] * 10:.2f} Å (prepared {self.reference[k] * 10:.2f} Å)"
            for k in broken[:5]
        )
        message = (
            f"{len(broken)} ML-region bond(s) changed by more than {self.max_change * 100:g}% of their "
            f"prepared length: {described}" + (", ..." if len(broken) > 5 else "")
        )
        if self.action == "stop":
            return message + " (guard.on_bond_change: stop; 'warn' only reports it)"
        self.notify(f"warning: {message}")
        return None


def _atom_label(atom) -> str:
    return f"{atom.residue.name}{atom.residue.id}:{atom.name}"

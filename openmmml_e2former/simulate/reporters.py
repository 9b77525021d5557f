"""OpenMM reporters of the engine: a blow-up guard and a progress bar (steps, ns/day, ETA)."""

from __future__ import annotations

import math
import sys
import time

MOLAR_GAS_CONSTANT = 8.314462618e-3  # kJ/mol/K


class SimulationError(RuntimeError):
    """A stage stopped because the simulation blew up (NaN, runaway temperature)."""


class GuardReporter:
    """Stops a stage when energies or positions stop being finite or the temperature runs away.

    Put it first in ``simulation.reporters``: OpenMM calls reporters in order, so the
    trajectory and CSV reporters never record the bad frame.
    """

    def __init__(self, interval: int, stage: str, dof: int, max_temperature_k: float):
        self.interval = int(interval)
        self.stage = stage
        self.dof = dof
        self.max_temperature_k = float(max_temperature_k)

    def describeNextReport(self, simulation):
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": None, "include": ["positions", "energy"]}

    def report(self, simulation, state):
        problem = state_problem(state, self.dof, self.max_temperature_k)
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

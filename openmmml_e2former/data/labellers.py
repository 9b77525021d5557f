"""Reference labellers: one interface, ``label(structure) -> Label`` (energy eV, forces eV/Å).

* :class:`XTBLabeller`: GFN2-xTB (or GFN1) through tblite, the default;
* :class:`PySCFLabeller`: Hartree-Fock or DFT through PySCF (on the GPU through GPU4PySCF when it is
  installed and a CUDA device is present);
* :class:`OpenMMLabeller`: a classical OpenMM force field (AMBER14, no cutoff), a fast oracle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..optional import available, require
from .structure import Structure

#: CODATA 2018 conversions.
HARTREE_TO_EV = 27.211386245988
BOHR_TO_ANGSTROM = 0.529177210903
from ..units import KJ_PER_MOL_TO_EV  # noqa: E402


@dataclass
class Label:
    """Energy ``eV``, forces ``[N, 3]`` eV/Å and metadata (method, program, version, charge, ...)."""

    energy: float
    forces: np.ndarray
    metadata: dict = field(default_factory=dict)


class Labeller:
    """Base class: subclasses implement :meth:`compute` and set ``method``/``program``."""

    method = ""
    program = ""

    def program_version(self) -> str:
        return ""

    def compute(self, structure: Structure) -> tuple[float, np.ndarray]:
        """(energy eV, forces ``[N, 3]`` eV/Å) of ``structure``."""
        raise NotImplementedError

    def label(self, structure: Structure) -> Label:
        start = time.process_time()
        energy, forces = self.compute(structure)
        forces = np.asarray(forces, dtype=np.float64).reshape(structure.num_atoms, 3)
        if not np.isfinite(energy) or not np.isfinite(forces).all():
            raise ValueError(f"{self.method} gave a non-finite energy or force for structure {structure.id}")
        meta = {
            "method": self.method,
            "program": self.program,
            "program_version": self.program_version(),
            "charge": int(structure.charge),
            "multiplicity": int(structure.multiplicity),
            "label_seconds": round(time.process_time() - start, 4),
        }
        meta.update(self.extra_metadata())
        return Label(float(energy), forces, meta)

    def extra_metadata(self) -> dict:
        return {}

    def apply(self, structure: Structure) -> Structure:
        """``structure`` with its energy, forces and label metadata filled in (a new object)."""
        result = self.label(structure)
        keep = {k: v for k, v in result.metadata.items() if k not in ("charge", "multiplicity")}
        return Structure(
            id=structure.id,
            molecule=structure.molecule,
            numbers=structure.numbers,
            positions=structure.positions,
            fragment_ids=structure.fragment_ids,
            charge=structure.charge,
            multiplicity=structure.multiplicity,
            source=structure.source,
            energy=result.energy,
            forces=result.forces,
            labels=keep,
        )


def _unpaired(structure: Structure) -> int:
    unpaired = structure.multiplicity - 1
    if unpaired < 0 or (structure.num_electrons() - unpaired) % 2:
        raise ValueError(
            f"structure {structure.id}: multiplicity {structure.multiplicity} is impossible with "
            f"{structure.num_electrons()} electrons (charge {structure.charge})"
        )
    return unpaired


DEFAULT_DAMPING = 0.4  # tblite's own default mixer damping


class XTBLabeller(Labeller):
    """GFN2-xTB (``method='GFN2-xTB'``) or GFN1-xTB through tblite's Python interface."""

    program = "tblite"

    def __init__(
        self,
        method: str = "GFN2-xTB",
        accuracy: float = 1.0,
        max_iterations: int = 300,
        fallback_damping: float | None = 0.1,
    ):
        if method not in ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB"):
            raise ValueError(f"unknown xTB method {method!r}; use GFN2-xTB or GFN1-xTB")
        self.method = method
        self.accuracy = accuracy
        self.max_iterations = max_iterations
        self.fallback_damping = fallback_damping
        self.damping = DEFAULT_DAMPING  # of the last structure labelled (recorded in its labels)
        _tblite()  # a missing tblite fails here, before any structure is read

    def program_version(self) -> str:
        from importlib.metadata import version

        return version("tblite")

    def extra_metadata(self) -> dict:
        return {"scf_damping": self.damping}

    def compute(self, structure: Structure) -> tuple[float, np.ndarray]:
        """One SCF with tblite's default mixer damping; if it does not converge (gas-phase ion
        pairs often don't), a second with ``fallback_damping``: a slower mixer reaching the same
        self-consistent solution (same method, same energy where both converge)."""
        try:
            result = self._singlepoint(structure, DEFAULT_DAMPING)
        except ValueError:
            if self.fallback_damping is None:
                raise
            result = self._singlepoint(structure, self.fallback_damping, 3 * self.max_iterations)
        energy = result.get("energy") * HARTREE_TO_EV
        forces = -result.get("gradient") * HARTREE_TO_EV / BOHR_TO_ANGSTROM
        return energy, forces

    def _singlepoint(self, structure: Structure, damping: float, iterations: int | None = None):
        calc = _tblite().Calculator(
            self.method,
            structure.numbers,
            structure.positions / BOHR_TO_ANGSTROM,
            charge=float(structure.charge),
            uhf=_unpaired(structure),
        )
        calc.set("verbosity", 0)
        calc.set("accuracy", self.accuracy)
        calc.set("max-iter", iterations or self.max_iterations)
        calc.set("mixer-damping", damping)
        self.damping = damping
        try:
            return calc.singlepoint()
        except Exception as exc:  # tblite raises its own error type when SCF fails
            raise ValueError(f"tblite failed on structure {structure.id}: {exc}") from exc


def _tblite():
    return require("tblite.interface", "labels", "GFN-xTB labels (XTBLabeller)")


def _pyscf(module: str = "pyscf"):
    return require(module, "dft", "DFT and Hartree-Fock labels (PySCFLabeller)")


GPU4PYSCF_HINT = "pip install gpu4pyscf-cuda12x (and a CUDA device)"


def gpu4pyscf_available() -> bool:
    """True when GPU4PySCF imports and CuPy sees at least one CUDA device."""
    if not available("gpu4pyscf"):
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device, CuPy missing
        return False


def resolve_gpu(setting) -> bool:
    """``"auto"``: GPU4PySCF when available; ``True``: required (clear error); ``False``: CPU PySCF."""
    mode = str(setting).strip().lower()
    if mode not in ("auto", "true", "false"):
        raise ValueError(f"gpu must be auto, true or false, not {setting!r}")
    if mode == "false":
        return False
    found = gpu4pyscf_available()
    if mode == "true" and not found:
        raise ValueError(
            f"GPU labelling asked for, but GPU4PySCF or a CUDA device is missing: {GPU4PYSCF_HINT}"
        )
    return found


class PySCFLabeller(Labeller):
    """Restricted/unrestricted Hartree-Fock (``xc=None``) or Kohn-Sham DFT through PySCF.

    For small systems only (the cost grows as N^3-N^4). ``gpu="auto"`` (default) runs on the GPU
    through GPU4PySCF when it is installed and a CUDA device is present, ``True`` requires that,
    ``False`` always uses CPU PySCF; the label metadata say which ran (``gpu4pyscf``).
    """

    program = "pyscf"

    def __init__(self, xc: str | None = "pbe0", basis: str = "def2-svp", gpu="auto"):
        _pyscf()  # a missing PySCF fails here, before any structure is read
        self.xc = xc
        self.basis = basis
        self.gpu = resolve_gpu(gpu)
        self.method = f"{xc}/{basis}" if xc else f"HF/{basis}"

    def program_version(self) -> str:
        return _pyscf().__version__

    def extra_metadata(self) -> dict:
        return {"basis": self.basis, "gpu4pyscf": self.gpu}

    def build(self, structure: Structure):
        """The PySCF mean-field object (not yet run) for ``structure``."""
        dft, gto, scf = (_pyscf(f"pyscf.{name}") for name in ("dft", "gto", "scf"))
        mol = gto.M(
            atom=[(int(z), tuple(p)) for z, p in zip(structure.numbers, structure.positions, strict=False)],
            unit="Angstrom",
            basis=self.basis,
            charge=int(structure.charge),
            spin=_unpaired(structure),
            verbose=0,
        )
        open_shell = structure.multiplicity != 1
        if self.xc:
            mf = dft.UKS(mol) if open_shell else dft.RKS(mol)
            mf.xc = self.xc
        else:
            mf = scf.UHF(mol) if open_shell else scf.RHF(mol)
        if self.gpu:
            mf = mf.to_gpu()
        mf.conv_tol = 1e-10
        return mf

    def compute(self, structure: Structure) -> tuple[float, np.ndarray]:
        mf = self.build(structure)
        energy = mf.kernel()
        if not mf.converged:
            raise ValueError(f"PySCF SCF did not converge for structure {structure.id}")
        method = mf.nuc_grad_method()
        if self.xc:
            method.grid_response = True  # forces are then exact derivatives of the (grid) energy
        gradient = np.asarray(method.kernel())
        return energy * HARTREE_TO_EV, -gradient * HARTREE_TO_EV / BOHR_TO_ANGSTROM


class OpenMMLabeller(Labeller):
    """A classical OpenMM force field (default AMBER14, no cutoff, no constraints) as an oracle.

    Bound to one ``topology`` (its atoms must match every structure labelled).
    """

    program = "openmm"

    def __init__(self, topology, forcefield_files: tuple[str, ...] = ("amber14-all.xml",)):
        import openmm
        import openmm.app as app

        self.method = "+".join(forcefield_files) + " (NoCutoff)"
        forcefield = app.ForceField(*forcefield_files)
        system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
        self.numbers = np.array([a.element.atomic_number for a in topology.atoms()])
        integrator = openmm.VerletIntegrator(0.001)
        platform = openmm.Platform.getPlatformByName("Reference")
        self.context = openmm.Context(system, integrator, platform)

    def program_version(self) -> str:
        import openmm

        return openmm.__version__

    def compute(self, structure: Structure) -> tuple[float, np.ndarray]:
        import openmm.unit as unit

        if len(structure.numbers) != len(self.numbers) or (structure.numbers != self.numbers).any():
            raise ValueError(f"structure {structure.id} does not match the OpenMM labeller's topology")
        self.context.setPositions(structure.positions * 0.1)
        state = self.context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * KJ_PER_MOL_TO_EV
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.angstrom)
        return energy, np.asarray(forces) * KJ_PER_MOL_TO_EV


def make_labeller(name: str, **options) -> Labeller:
    """Labeller by name: ``gfn2`` (default), ``gfn1``, ``pyscf`` (options xc, basis, gpu)."""
    if name in ("gfn2", "xtb", "GFN2-xTB"):
        return XTBLabeller("GFN2-xTB", **options)
    if name in ("gfn1", "GFN1-xTB"):
        return XTBLabeller("GFN1-xTB", **options)
    if name in ("pyscf", "dft", "hf"):
        if name == "hf":
            options.setdefault("xc", None)
        return PySCFLabeller(**options)
    raise ValueError(f"unknown labeller {name!r}; use gfn2, gfn1, pyscf or hf (OpenMM needs a topology)")

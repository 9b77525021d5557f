"""Optional packages: imported where they are needed, with the extra that installs them named.

``pip install openmmml-e2former`` gives the plug-in, the protocols and the analysis. Ligand
fragments, the ASE calculator, labelling, training and the benchmarks' peers need packages that
come with extras (``pyproject.toml``; README, "Install"). As openmm-ml does for its models,
those packages are imported inside the function that needs them, through :func:`require`:

>>> Chem = require("rdkit.Chem", "ligands", "BRICS fragments of ligands")

A leaf module: it imports nothing from the package.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

#: Top-level module of each optional package -> the distribution that provides it.
PACKAGES = {
    "rdkit": "rdkit",
    "openmmforcefields": "openmmforcefields",
    "ase": "ase",
    "tblite": "tblite",
    "pyscf": "pyscf",
    "tensorboard": "tensorboard",
    "mace": "mace-torch",
    "e3nn": "mace-torch",  # e3nn 0.4 comes with mace-torch
    "dask": "dask",
    "distributed": "distributed",
    "dask_jobqueue": "dask-jobqueue",
}


def install_command(extra: str) -> str:
    return f"pip install 'openmmml-e2former[{extra}]'"


def require(module: str, extra: str, purpose: str | None = None) -> ModuleType:
    """Import and return ``module`` (dotted names allowed, e.g. ``"rdkit.Chem.BRICS"``).

    When it cannot be imported: an ``ImportError`` that names the package, what needs it
    (``purpose``, read after "needed for") and ``pip install 'openmmml-e2former[<extra>]'``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        package = PACKAGES.get(top, top)
        if isinstance(exc, ModuleNotFoundError) and exc.name == top:
            reason = "is not installed"
        else:  # installed but broken (a missing dependency of its own, a binary that fails to load)
            reason = f"does not import ({exc})"
        what = f" for {purpose}" if purpose else f" (`import {module}`)"
        message = f"{package} is needed{what} but {reason}: {install_command(extra)}"
        raise ImportError(message, name=module) from exc


def available(module: str) -> bool:
    """Whether ``module`` can be found (without importing it; for skipping optional steps)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a blocked/half-imported one
        return False

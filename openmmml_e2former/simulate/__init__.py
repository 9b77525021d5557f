"""Protein protocols: from a PDB file to an equilibrated ML/MM system.

>>> from openmmml_e2former.simulate import load_protocol, run_protocol
>>> protocol = load_protocol("quick-check")            # or a path to your own YAML file
>>> run_protocol(protocol, "my.pdb", "runs/my", ml_selection="protein")

Modules: ``protocol`` (YAML presets), ``prepare`` (pdbfixer), ``system`` (force field,
ML region, restraints, barostat, platform), ``selection`` (mdtraj selections),
``reporters`` (progress bar, blow-up guard), ``restart`` (run folders, trimming),
``engine`` (the stages).
"""

from .engine import run_protocol
from .protocol import Protocol, list_presets, load_protocol, protocol_from_dict
from .reporters import SimulationError

__all__ = [
    "Protocol",
    "SimulationError",
    "list_presets",
    "load_protocol",
    "protocol_from_dict",
    "run_protocol",
]

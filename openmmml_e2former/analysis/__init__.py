"""Analysis of runs with mdtraj: plain functions returning arrays (``metrics``), run folders
(``run_data``), figures (``plots``) and the report (``report.analyze_run``)."""

from .metrics import (
    hydrogen_bond_counts,
    image_and_superpose,
    radius_of_gyration,
    residue_rmsf,
    rmsd,
    rmsf,
    sasa,
    secondary_structure,
    secondary_structure_fractions,
)
from .run_data import load_run, read_state_csv

__all__ = [
    "hydrogen_bond_counts",
    "image_and_superpose",
    "load_run",
    "radius_of_gyration",
    "read_state_csv",
    "residue_rmsf",
    "rmsd",
    "rmsf",
    "sasa",
    "secondary_structure",
    "secondary_structure_fractions",
]

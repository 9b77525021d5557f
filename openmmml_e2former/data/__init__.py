"""Reference data: structure generators, labellers (GFN2-xTB, DFT, OpenMM), dataset I/O, splits.

Units everywhere: positions in Angstrom, energies in eV, forces in eV/Angstrom, charge in e.
"""

from .structure import Structure

__all__ = ["Structure"]

"""Hydrogen caps on covalent bonds cut by a region: one rule for training data and simulation.

A bond A–B with A kept and B cut away is replaced by a hydrogen on the segment A→B at a fixed
distance from A (the typical A–H bond length; ``CAP_BOND_LENGTH``, Angstrom). Data generation
(``data/generators.py``) and the OpenMM module (``export.py``) both place caps with
:func:`cap_positions`, so a network sees the same caps in training and in MD
(``docs/mixed-system.md``, "Link atoms").
"""

from __future__ import annotations

import torch

#: A–H bond length (Angstrom) by the atomic number of A; elements not listed use ``DEFAULT_CAP``
CAP_BOND_LENGTH = {1: 0.74, 6: 1.09, 7: 1.01, 8: 0.96, 15: 1.42, 16: 1.34}
DEFAULT_CAP = 1.09


def cap_bond_length(atomic_number: int) -> float:
    """Distance (Angstrom) of the cap from an atom of this element."""
    return CAP_BOND_LENGTH.get(int(atomic_number), DEFAULT_CAP)


def cap_positions(inner: torch.Tensor, bond: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Caps ``[L, 3]`` for kept atoms at ``inner`` ``[L, 3]``: ``bond`` ``[L, 3]`` is the vector
    to the cut-away partner (minimum image already applied), ``lengths`` ``[L]`` the cap
    distances. Differentiable (forces on a cap reach both atoms); TorchScript-able."""
    unit = bond / bond.pow(2).sum(dim=-1, keepdim=True).sqrt()
    return inner + lengths.unsqueeze(1) * unit

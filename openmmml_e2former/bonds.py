"""Covalent-bond geometry shared by the protocol engine's bond guard and the active-learning tools:
which bonds to watch and how much their lengths changed (nearest periodic image when a box is given).
"""

from __future__ import annotations

import numpy as np

BROKEN = 0.3  # relative change of a bond length that counts as a broken (or formed) bond


def bond_pairs(topology, atoms=None) -> np.ndarray:
    """``[B, 2]`` atom indices of the topology's bonds (only bonds within ``atoms`` when given)."""
    keep = None if atoms is None else set(int(i) for i in atoms)
    pairs = [
        (a.index, b.index)
        for a, b in topology.bonds()
        if keep is None or (a.index in keep and b.index in keep)
    ]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def bond_lengths(positions: np.ndarray, pairs: np.ndarray, box=None) -> np.ndarray:
    """Length of every bond in ``pairs``; with ``box`` (rows = OpenMM's reduced triclinic vectors,
    same unit as ``positions``) the nearest periodic image."""
    d = positions[pairs[:, 1]] - positions[pairs[:, 0]]
    if box is not None:
        box = np.asarray(box, dtype=float)
        for k in (2, 1, 0):
            d = d - np.outer(np.round(d[:, k] / box[k][k]), box[k])
    return np.linalg.norm(d, axis=1)


def bond_change(positions: np.ndarray, pairs: np.ndarray, reference: np.ndarray, box=None) -> np.ndarray:
    """Relative change ``|d / d_ref - 1|`` of every bond in ``pairs`` (positions in any one unit)."""
    return np.abs(bond_lengths(positions, pairs, box) / reference - 1.0)

"""An optional learned-charge electrostatic energy (``electrostatics="coulomb"``).

Each atom gets a charge from its final invariant features; the charges are shifted equally so
that they add up to the system's total charge, and interact through a Coulomb kernel screened at
short range, ``erf(r / sigma) / r``, which is smooth at r = 0 and equal to ``1 / r`` beyond a few
sigma (the local blocks model the short range). With ``cutoff > 0`` the kernel is shifted so that
it and its force vanish at the cutoff (damped shifted force, Fennell & Gezelter 2006), which also
serves periodic boxes (minimum image; the cutoff must be at most half the box). With no cutoff
every pair interacts (non-periodic only).

All pairs are evaluated densely: fixed shapes, no host synchronisation, memory ~N^2 (fine to a
few thousand atoms). See ``docs/electrostatics.md``.
"""

from __future__ import annotations

import math

import torch

from .graph import minimum_image


def total_charge_shift(raw: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Charges ``[N]`` shifted equally so that they sum to ``total``."""
    return raw + (total.to(raw.dtype) - raw.sum()) / raw.shape[0]


def kernel(r: torch.Tensor, sigma: float, cutoff: float) -> torch.Tensor:
    """``erf(r/sigma)/r``, shifted to vanish with its derivative at ``cutoff`` (> 0) and zero
    beyond it; ``r`` > 0."""
    v = torch.erf(r / sigma) / r
    if cutoff <= 0.0:
        return v
    erf_c = math.erf(cutoff / sigma)
    v_c = erf_c / cutoff
    gauss = 2.0 / (sigma * math.sqrt(math.pi)) * math.exp(-((cutoff / sigma) ** 2))
    dv_c = (gauss * cutoff - erf_c) / cutoff**2
    shifted = v - v_c - (r - cutoff) * dv_c
    return torch.where(r < cutoff, shifted, torch.zeros_like(shifted))


def coulomb_energies(
    positions: torch.Tensor,
    charges: torch.Tensor,
    box: torch.Tensor | None,
    coulomb_constant: float,
    sigma: float,
    cutoff: float,
) -> torch.Tensor:
    """Per-atom electrostatic energies ``[N]`` (half of each pair to each atom), in the unit of
    ``coulomb_constant`` (energy x Angstrom per e^2)."""
    n = positions.shape[0]
    delta = positions.unsqueeze(1) - positions.unsqueeze(0)
    if box is not None:
        delta = minimum_image(delta, box)
    eye = torch.eye(n, dtype=positions.dtype, device=positions.device)
    # the diagonal gets a harmless distance of 1 (masked below) so that no sqrt(0) reaches autograd
    r = (delta.pow(2).sum(dim=-1) + eye).sqrt()
    v = kernel(r, sigma, cutoff) * (1.0 - eye)
    return 0.5 * coulomb_constant * charges * (v @ charges)

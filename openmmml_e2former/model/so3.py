"""Real spherical harmonics and Wigner 3j tensors in e3nn's conventions, without e3nn.

This module replaces the two e3nn functions the network used, so the package does not
depend on e3nn (mace-torch pins e3nn 0.4.4, this package used 0.6.0).

Shapes and units
----------------
* :class:`SphericalHarmonics` ``(lmax)``: ``vectors [E, 3]`` (any length unit: only the
  direction is used) -> ``[E, (lmax + 1) ** 2]``, dimensionless; blocks ``l = 0..lmax``
  concatenated, each block ordered ``m = -l..l``.  Same function as e3nn's
  ``o3.SphericalHarmonics(list(range(lmax + 1)), normalize=True, normalization="norm")``.
  ``lmax <= 3`` (explicit polynomials); larger ``lmax`` raises ``ValueError``.
* :func:`wigner_3j` ``(l1, l2, l3)`` -> ``[2 l1 + 1, 2 l2 + 1, 2 l3 + 1]``, unit Frobenius
  norm: the same tensor as e3nn 0.6.0's ``o3.wigner_3j(l1, l2, l3)``, any ``l``.

Conventions (e3nn's, checked numerically, not assumed)
------------------------------------------------------
* Vectors are normalised with ``torch.nn.functional.normalize`` (``v / max(|v|, 1e-12)``),
  as e3nn does, so a zero vector gives ``Y_0 = 1`` and zeros for every ``l >= 1``, with no
  NaN in the forward pass (and a finite gradient).
* The y axis is the polar axis: e3nn's real harmonics are the textbook real harmonics
  (z polar, positive polynomials, e.g. ``Y_1 ∝ (y, z, x)``) evaluated at the cyclically
  permuted point ``(x_s, y_s, z_s) = (z, x, y)``.  Hence ``Y_1(u) = (x, y, z)`` for a unit
  vector ``u = (x, y, z)`` and ``Y_2(u) = (√3 xz, √3 xy, y² - (x² + z²)/2, √3 yz,
  √3/2 (z² - x²))``.
* ``"norm"`` normalisation: ``sum_m Y_lm(u)² = 1`` for every ``l`` and unit ``u`` (e3nn's
  "component" normalisation divided by ``√(2l + 1)``); ``Y_0 = 1``.

How wigner_3j is computed (first principles)
--------------------------------------------
1. Complex Clebsch-Gordan coefficients ``<l1 m1 l2 m2 | l3 m3>`` (Condon-Shortley phase)
   from Racah's formula, in exact rational arithmetic with one square root at the end.
2. The unitary change of basis ``U_l`` from the complex harmonics to the real ones above
   (``Y_real = U_l Y_complex``: ``m > 0``: ``(Y^-m + (-1)^m Y^m)/√2``, ``m < 0``:
   ``i (Y^m - (-1)^m Y^-m)/√2``), giving
   ``T[a, b, c] = sum U1[a, m1] U2[b, m2] conj(U3[c, m3]) CG[m1, m2, m3]``.
3. ``T`` is real times a power of ``i``; e3nn's phase convention is reproduced by taking
   ``Re(i ** (l1 + l2 - l3) * T)`` (equivalently: the real basis of degree ``l`` carries an
   extra phase ``i ** l``), then dividing by the Frobenius norm.

Checked against e3nn 0.6.0 on 2026-12-04: harmonics for ``lmax = 0..3`` (float64, random
and axis-aligned vectors, max abs difference 3e-16) and ``wigner_3j`` for every
triangle-allowed triple with ``l1, l2, l3 <= 5`` (max abs difference 1e-16);
``tests/test_so3.py`` holds a frozen fixture of those e3nn 0.6.0 values.  e3nn 0.4.4 (the
version mace-torch pins) gives the same harmonics but a *different sign* for some
``wigner_3j`` triples (its values come from a stored table), among them ``(2, 1, 2)``,
``(1, 2, 2)`` and ``(1, 3, 3)``: we follow 0.6.0, whatever e3nn is installed.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch
from torch import nn

MAX_LMAX = 3


class SphericalHarmonics(nn.Module):
    """Real spherical harmonics of the direction of ``vectors``, e3nn's "norm" convention.

    ``forward(vectors [E, 3]) -> [E, (lmax + 1) ** 2]`` (any leading shape ``[..., 3]``
    works).  TorchScript-able, ``torch.compile(fullgraph=True)``-able, float32 and float64.
    """

    def __init__(self, lmax: int):
        super().__init__()
        lmax = int(lmax)
        if lmax < 0 or lmax > MAX_LMAX:
            raise ValueError(
                f"SphericalHarmonics supports 0 <= lmax <= {MAX_LMAX} (explicit polynomials); got {lmax}"
            )
        self.lmax = lmax

    def extra_repr(self) -> str:
        return f"lmax={self.lmax}"

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        # constants computed here, not as module globals, so that TorchScript accepts them
        s3 = math.sqrt(3.0)
        s6 = math.sqrt(6.0)
        s10 = math.sqrt(10.0)
        s15 = math.sqrt(15.0)
        u = torch.nn.functional.normalize(vectors, dim=-1)
        x = u[..., 0]
        y = u[..., 1]
        z = u[..., 2]
        parts = [torch.ones_like(x)]
        if self.lmax >= 1:
            parts += [x, y, z]
        if self.lmax >= 2:
            x2 = x * x
            y2 = y * y
            z2 = z * z
            parts += [
                s3 * x * z,
                s3 * x * y,
                y2 - 0.5 * (x2 + z2),
                s3 * y * z,
                0.5 * s3 * (z2 - x2),
            ]
            if self.lmax >= 3:
                # textbook l = 3 real harmonics at (x_s, y_s, z_s) = (z, x, y), scaled to unit norm
                parts += [
                    0.25 * s10 * x * (3.0 * z2 - x2),
                    s15 * x * y * z,
                    0.25 * s6 * x * (4.0 * y2 - x2 - z2),
                    0.5 * y * (2.0 * y2 - 3.0 * x2 - 3.0 * z2),
                    0.25 * s6 * z * (4.0 * y2 - x2 - z2),
                    0.5 * s15 * y * (z2 - x2),
                    0.25 * s10 * z * (z2 - 3.0 * x2),
                ]
        return torch.stack(parts, dim=-1)


def _clebsch_gordan(l1: int, m1: int, l2: int, m2: int, l3: int, m3: int) -> float:
    """<l1 m1 l2 m2 | l3 m3> (Condon-Shortley phase), Racah's formula, exact until the sqrt."""
    if m1 + m2 != m3 or abs(m1) > l1 or abs(m2) > l2 or abs(m3) > l3:
        return 0.0
    f = math.factorial
    prefactor = Fraction(
        (2 * l3 + 1) * f(l3 + l1 - l2) * f(l3 - l1 + l2) * f(l1 + l2 - l3), f(l1 + l2 + l3 + 1)
    )
    prefactor *= f(l3 + m3) * f(l3 - m3) * f(l1 - m1) * f(l1 + m1) * f(l2 - m2) * f(l2 + m2)
    total = Fraction(0)
    for k in range(l1 + l2 - l3 + 1):
        args = (k, l1 + l2 - l3 - k, l1 - m1 - k, l2 + m2 - k, l3 - l2 + m1 + k, l3 - l1 - m2 + k)
        if min(args) < 0:
            continue
        denominator = 1
        for a in args:
            denominator *= f(a)
        total += Fraction((-1) ** k, denominator)
    if total == 0:
        return 0.0
    return math.copysign(math.sqrt(prefactor * total * total), total)


def _complex_to_real(l: int) -> torch.Tensor:
    """Unitary U [2l+1, 2l+1] with Y_real[a] = sum_m U[a, m] Y_complex[m] (indices m + l)."""
    u = torch.zeros(2 * l + 1, 2 * l + 1, dtype=torch.complex128)
    r = 1.0 / math.sqrt(2.0)
    u[l, l] = 1.0
    for m in range(1, l + 1):
        sign = (-1) ** m
        u[l + m, l + m] = sign * r  # cos-like: (Y^-m + (-1)^m Y^m) / sqrt 2
        u[l + m, l - m] = r
        u[l - m, l - m] = 1j * r  # sin-like: i (Y^-m - (-1)^m Y^m) / sqrt 2
        u[l - m, l + m] = -1j * sign * r
    return u


@functools.cache
def _wigner_3j_float64(l1: int, l2: int, l3: int) -> torch.Tensor:
    cg = torch.zeros(2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1, dtype=torch.complex128)
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            m3 = m1 + m2
            if abs(m3) <= l3:
                cg[l1 + m1, l2 + m2, l3 + m3] = _clebsch_gordan(l1, m1, l2, m2, l3, m3)
    u1, u2, u3 = _complex_to_real(l1), _complex_to_real(l2), _complex_to_real(l3)
    t = torch.einsum("am,bn,cp,mnp->abc", u1, u2, u3.conj(), cg)
    t = t * (1j) ** ((l1 + l2 - l3) % 4)
    # the imaginary part is rounding noise (< 1e-15); keep the real part
    real = t.real.contiguous()
    return real / real.norm()


def wigner_3j(
    l1: int, l2: int, l3: int, dtype: torch.dtype = torch.float64, device: torch.device | None = None
) -> torch.Tensor:
    """Real Wigner 3j tensor [2 l1 + 1, 2 l2 + 1, 2 l3 + 1] in e3nn's basis and sign convention.

    Invariant: ``C[i, j, k] = D1[i, a] D2[j, b] D3[k, c] C[a, b, c]`` for the real Wigner D
    matrices of any rotation in the basis of :class:`SphericalHarmonics`; unit Frobenius norm.
    Equals e3nn 0.6.0's ``o3.wigner_3j(l1, l2, l3)`` (note: e3nn's default dtype is
    ``torch.get_default_dtype()``; here it is float64).  Returns a fresh tensor.
    """
    l1, l2, l3 = int(l1), int(l2), int(l3)
    if min(l1, l2, l3) < 0 or not abs(l1 - l2) <= l3 <= l1 + l2:
        raise ValueError(f"wigner_3j: (l1, l2, l3) = ({l1}, {l2}, {l3}) violates the triangle rule")
    return _wigner_3j_float64(l1, l2, l3).to(dtype=dtype, device=device, copy=True)

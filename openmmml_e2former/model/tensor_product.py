"""First-order equivariant message: sum_j w_ij * TP(v_j, u_ij) with u_ij a 3-vector.

The tensor product couples every degree l1 of the value with the l = 1 harmonic of the
edge vector (the raw Cartesian vector in e3nn's (x, y, z) order) into every l_out allowed
by the triangle rule and lmax.  Each path has its own channel-mixing matrix W[u, w].

The authors evaluate the same sum node-wise from absolute positions (the "Wigner-6j"
factorisation).  Here each edge only scales the gathered sender values by
``weight x vector component`` (three scalars per channel), the three sums are taken onto
the receiving atom, and the Clebsch-Gordan contraction and the channel mixing run once per
atom.  Both orders give the same function.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import scatter_sum
from .so3 import wigner_3j


def message_paths(lmax: int) -> list[tuple[int, int]]:
    """(l_in, l_out) pairs coupled by an l = 1 vector, in the authors' weight order."""
    return [(l1, lo) for l1 in range(lmax + 1) for lo in range(lmax + 1) if abs(l1 - 1) <= lo <= l1 + 1]


class VectorTensorProduct(nn.Module):
    """Weighted sum over edges of TP(values, vectors), then per-path channel mixing.

    ``weight`` stores one [C, C] matrix per path, flattened in path order, so it has the
    layout of the authors' ``tensor_product_tp_component_1.weight``.
    """

    def __init__(self, channels: int, lmax: int):
        super().__init__()
        self.channels = channels
        self.lmax = lmax
        self.paths = message_paths(lmax)
        self.register_buffer(
            "geometry", self._exact_geometry().to(torch.get_default_dtype()), persistent=False
        )
        # 1/sqrt(number of paths into each l_out)
        counts = [sum(1 for _, lo in self.paths if lo == lout) for lout in range(lmax + 1)]
        path_norm = torch.cat([torch.full((2 * l + 1,), counts[l] ** -0.5) for l in range(lmax + 1)])
        self.register_buffer("path_norm", path_norm.view(1, -1, 1), persistent=False)
        self.weight = nn.Parameter(torch.randn(len(self.paths) * channels * channels))
        self.num_paths = len(self.paths)
        self.path_l_in = [p[0] for p in self.paths]
        self.path_l_out = [p[1] for p in self.paths]

    def _exact_geometry(self) -> torch.Tensor:
        """The Wigner-3j coupling of every path (component normalised: times sqrt(2 l_out + 1)),
        [(lmax+1)^2, 3, rows], in float64."""
        dim = (self.lmax + 1) ** 2
        geometry = torch.zeros(dim, 3, sum(2 * lo + 1 for _, lo in self.paths), dtype=torch.float64)
        row = 0
        for l1, lo in self.paths:
            cg = wigner_3j(l1, 1, lo, dtype=torch.float64) * math.sqrt(2 * lo + 1)
            geometry[l1 * l1 : (l1 + 1) ** 2, :, row : row + 2 * lo + 1] = cg
            row += 2 * lo + 1
        return geometry

    def _apply(self, fn, recurse=True):
        """``.double()``/``.float()``/``.to(...)``: the constants are converted from their float64
        values, not from the rounded copy a float32 model holds (a float64 model built in float32
        would otherwise keep float32 coefficients and be rotation-invariant only to ~1e-10)."""
        super()._apply(fn, recurse)
        self.geometry = self._exact_geometry().to(device=self.geometry.device, dtype=self.geometry.dtype)
        return self

    def forward(
        self,
        values: torch.Tensor,
        vectors: torch.Tensor,
        weights: torch.Tensor,
        receivers: torch.Tensor,
        num_nodes: int,
    ) -> torch.Tensor:
        """Message per receiving node.

        Args:
            values: ``[E, (lmax+1)^2, C]`` sender features gathered per edge.
            vectors: ``[E, 3]`` edge vectors (already scaled as the caller wants).
            weights: ``[E, C]`` per-edge, per-channel weights.
            receivers: ``[E]`` receiving node of each edge.
            num_nodes: number of receiving nodes.
        Returns:
            ``[num_nodes, (lmax+1)^2, C]``.
        """
        # TP(v, u) is linear in u: sum_e TP(w_e v_e, u_e) = sum_k G_k (sum_e u_ek w_e v_e), so
        # the edges only scale gathered values by scalars and the Clebsch-Gordan contraction
        # runs once per node (no [E, rows, C] tensor per edge).
        parts: list[torch.Tensor] = []
        for k in range(3):
            scaled = values * (weights * vectors[:, k : k + 1]).unsqueeze(1)
            parts.append(scatter_sum(scaled, receivers, num_nodes))
        stacked = torch.stack(parts, dim=1)  # [N, 3, (lmax+1)^2, C]
        summed = torch.einsum("iko,nkic->noc", self.geometry.to(values.dtype), stacked)
        return self.mix(summed)

    def from_components(self, stacked: torch.Tensor) -> torch.Tensor:
        """The message from its per-component sums ``stacked`` ``[C, N, 3, (lmax+1)^2]``:
        ``stacked[c, n, k, i] = sum_e w_ec u_ek v_ei,c`` over node n's edges (the dense layout's
        channel-major order); returns ``[N, (lmax+1)^2, C]``."""
        summed = torch.einsum("iko,cnki->noc", self.geometry.to(stacked.dtype), stacked)
        return self.mix(summed)

    def mix(self, summed: torch.Tensor) -> torch.Tensor:
        """Per-path channel mixing of ``[n, rows, C]`` path blocks into ``[n, (lmax+1)^2, C]``."""
        c = self.channels
        w = self.weight.view(self.num_paths, c, c)
        outputs: list[torch.Tensor] = []
        for lout in range(self.lmax + 1):
            acc = torch.zeros((summed.shape[0], 2 * lout + 1, c), dtype=summed.dtype, device=summed.device)
            row = 0
            for p in range(self.num_paths):
                width = 2 * self.path_l_out[p] + 1
                if self.path_l_out[p] == lout:
                    acc = acc + torch.matmul(summed[:, row : row + width], w[p])
                row += width
            outputs.append(acc)
        return torch.cat(outputs, dim=1) * self.path_norm.to(summed.dtype)

"""Building blocks that act on equivariant features.

Feature tensors have shape ``[n, (lmax+1)**2, C]``: the middle axis runs over (l, m) in
e3nn order (l-major, m = -l..l), the last over channels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Second-moment normalisation constants of SiLU and sigmoid for a unit Gaussian input
# (the values e3nn.math.normalize2mom computes).
SILU_2MOM = 1.6791767923989418
SIGMOID_2MOM = 1.8467055342154763


def scatter_sum(src: torch.Tensor, index: torch.Tensor, num_rows: int) -> torch.Tensor:
    """``out[index[e]] += src[e]`` into ``[num_rows, *src.shape[1:]]``.

    ``scatter_add`` with the index broadcast (a stride-0 view) over the row: its backward keeps
    only the index, where ``index_add``'s keeps the whole ``src`` (~0.9 GiB of edge tensors at
    2,000 atoms; ``docs/speed.md``). Threaded on the CPU, atomic (CUDA-graph capturable) on a GPU.
    """
    rows = src.shape[0]
    flat = src.flatten(1)  # [E, rest] (also when E = 0)
    size = list(src.shape)
    size[0] = num_rows
    out = torch.zeros((num_rows, flat.shape[1]), dtype=src.dtype, device=src.device)
    return out.scatter_add(0, index.view(-1, 1).expand(rows, flat.shape[1]), flat).view(size)


def degree_index(lmax: int) -> torch.Tensor:
    """Degree l of each of the (lmax+1)**2 (l, m) rows."""
    return torch.cat([torch.full((2 * l + 1,), l, dtype=torch.long) for l in range(lmax + 1)])


def mlp(sizes: list[int], layer_norm_eps: float = 1e-5) -> nn.Sequential:
    """Linear -> LayerNorm -> SiLU blocks, ending with a plain Linear."""
    layers: list[nn.Module] = []
    for i in range(1, len(sizes)):
        layers.append(nn.Linear(sizes[i - 1], sizes[i]))
        if i < len(sizes) - 1:
            layers.append(nn.LayerNorm(sizes[i], eps=layer_norm_eps))
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def polynomial_envelope(dist: torch.Tensor, cutoff: float) -> torch.Tensor:
    """1 - 21 x^5 + 35 x^6 - 15 x^7 with x = d / cutoff; zero (with zero first and second
    derivatives) at and beyond the cutoff."""
    x = dist / cutoff
    env = 1.0 - 21.0 * x**5 + 35.0 * x**6 - 15.0 * x**7
    return torch.where(dist < cutoff, env, torch.zeros_like(env)).clamp(min=0.0)


class GaussianBasis(nn.Module):
    """Gaussians centred evenly on [0, cutoff]; width 2 x spacing. ``[...] -> [..., n]``."""

    def __init__(self, num_basis: int, cutoff: float):
        super().__init__()
        offset = torch.linspace(0.0, cutoff, num_basis)
        spacing = (offset[1] - offset[0]).item()
        self.coeff = -0.5 / (2.0 * spacing) ** 2
        self.register_buffer("offset", offset)

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        diff = dist.unsqueeze(-1) - self.offset.to(dist.dtype)
        return torch.exp(self.coeff * diff * diff)


class SO3Linear(nn.Module):
    """Channel mixing with one weight matrix per degree l, bias on l = 0 only."""

    def __init__(self, in_channels: int, out_channels: int, lmax: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_channels)
        self.weight = nn.Parameter(torch.empty(lmax + 1, out_channels, in_channels))
        nn.init.uniform_(self.weight, -bound, bound)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("degree", degree_index(lmax), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.index_select(0, self.degree)  # [(lmax+1)^2, out, in]
        out = torch.einsum("nmi,moi->nmo", x, weight)
        return torch.cat([out[:, :1] + self.bias, out[:, 1:]], dim=1)


class InvariantProjection(nn.Module):
    """Invariants from two per-degree linear maps: s_l = sum_m (W x)_lm (W2 x)_lm, then an MLP.

    ``[n, (lmax+1)^2, C] -> [n, out_features]``; used for attention queries and keys.
    """

    def __init__(self, in_channels: int, out_features: int, lmax: int):
        super().__init__()
        half = out_features // 2
        bound = 1.0 / math.sqrt(in_channels)
        self.lmax = lmax
        self.weight = nn.Parameter(torch.empty(lmax + 1, half, in_channels))
        self.weight2 = nn.Parameter(torch.empty(lmax + 1, half, in_channels))
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.weight2, -bound, bound)
        self.bias = nn.Parameter(torch.zeros(half))
        self.register_buffer("degree", degree_index(lmax), persistent=False)
        self.mlp = mlp([half * (lmax + 1), out_features, out_features])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.einsum("nmi,moi->nmo", x, self.weight.index_select(0, self.degree))
        b = torch.einsum("nmi,moi->nmo", x, self.weight2.index_select(0, self.degree))
        a = torch.cat([a[:, :1] + self.bias, a[:, 1:]], dim=1)
        prod = a * b
        invariants = [prod[:, l * l : (l + 1) * (l + 1)].sum(dim=1) for l in range(self.lmax + 1)]
        return self.mlp(torch.cat(invariants, dim=-1))


class EquivariantRMSNorm(nn.Module):
    """RMS norm over all (l, m, channel) entries with every degree weighted equally.

    The l = 0 block is centred over channels first; a per-degree affine weight and an
    l = 0 bias follow.
    """

    def __init__(self, channels: int, lmax: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.affine_weight = nn.Parameter(torch.ones(lmax + 1, channels))
        self.affine_bias = nn.Parameter(torch.zeros(channels))
        degree = degree_index(lmax)
        balance = 1.0 / ((2 * degree + 1).to(torch.get_default_dtype()) * (lmax + 1))
        self.register_buffer("degree", degree, persistent=False)
        self.register_buffer("balance", balance.view(1, -1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x[:, :1] - x[:, :1].mean(dim=2, keepdim=True)
        x = torch.cat([x0, x[:, 1:]], dim=1)
        mean_square = (x * x * self.balance.to(x.dtype)).sum(dim=1, keepdim=True)
        scale = (mean_square.mean(dim=2, keepdim=True) + self.eps).pow(-0.5)
        out = x * scale * self.affine_weight.index_select(0, self.degree)
        return torch.cat([out[:, :1] + self.affine_bias, out[:, 1:]], dim=1)


class GatedFeedForward(nn.Module):
    """SO3Linear -> gate (scalars from l = 0 drive every degree) -> SO3Linear."""

    def __init__(self, channels: int, lmax: int):
        super().__init__()
        self.channels = channels
        self.lmax = lmax
        self.linear_1 = SO3Linear(channels, channels, lmax)
        self.gates = nn.Linear(channels, channels * (lmax + 1))
        bound = 1.0 / math.sqrt(channels)
        nn.init.uniform_(self.gates.weight, -bound, bound)
        self.linear_2 = SO3Linear(channels, channels, lmax)
        self.silu_scale = SILU_2MOM
        self.sigmoid_scale = SIGMOID_2MOM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear_1(x)
        gates = self.gates(h[:, 0:1])  # [n, 1, C (lmax+1)]
        c = self.channels
        parts = [torch.nn.functional.silu(gates[:, :, :c]) * self.silu_scale]
        for l in range(1, self.lmax + 1):
            gate = torch.sigmoid(gates[:, :, l * c : (l + 1) * c]) * self.sigmoid_scale
            parts.append(gate * h[:, l * l : (l + 1) * (l + 1)])
        return self.linear_2(torch.cat(parts, dim=1))

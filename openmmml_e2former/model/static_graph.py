"""Neighbour graphs with shapes fixed at set-up: no host synchronisation per call.

The graphs of ``graph.py`` have as many edges as there are pairs, so their shapes change
every step and building them copies data to the host (vesin's cell list, ``nonzero``).
That stops CUDA graphs and ``torch.compile(fullgraph=True)``.  Here every tensor has a
shape fixed by a :class:`GraphPlan` made once from a first set of positions:

- candidates come from a cell list with a fixed grid and a fixed number of slots per cell
  (``cell_candidates``), or from all (query, target) pairs (``dense_candidates``);
- the pairs within the cutoff are packed, in order, into ``capacity`` edge slots by a
  prefix sum (no ``nonzero``); unused slots point at (0, 0) with ``inside`` False and a
  constant vector far outside the cutoff, so they carry zero weight and no gradient.

Each builder also returns an ``overflow`` flag (a 0-d bool tensor): a cell held more atoms
than its slots, the pairs exceeded the capacity, or the periodic box shrank below the
grid's cell width.  Callers decide what to do without forcing a sync: the OpenMM module
turns the energy into NaN (so the step fails loudly) and, where a host check is allowed,
re-plans with larger sizes.

Lengths are in Angstrom; boxes are ``[3, 3]`` with lattice vectors as rows in OpenMM's
reduced (lower-triangular) form, or ``None``.  The returned graph has the layout of
``graph.py``: ``(receivers, senders, vectors, distances, inside)``.
"""

from __future__ import annotations

import math

import torch

from .graph import minimum_image

Graph = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def fractional(positions: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Fractional coordinates ``[n, 3]`` in a lower-triangular box (no matrix inverse, which
    would synchronise on CUDA)."""
    z = positions[:, 2] / box[2, 2]
    y = (positions[:, 1] - z * box[2, 1]) / box[1, 1]
    x = (positions[:, 0] - z * box[2, 0] - y * box[1, 0]) / box[0, 0]
    return torch.stack([x, y, z], dim=1)


def plane_spacings(box: torch.Tensor) -> torch.Tensor:
    """Distances between opposite faces of the cell ``[3]`` (the widths that matter for a
    cutoff), for a lower-triangular box."""
    a, b, c = box[0], box[1], box[2]
    volume = box[0, 0] * box[1, 1] * box[2, 2]
    bc = torch.linalg.cross(b, c)
    ca = torch.linalg.cross(c, a)
    ab = torch.linalg.cross(a, b)
    norms = torch.stack(
        [
            torch.linalg.vector_norm(bc),
            torch.linalg.vector_norm(ca),
            torch.linalg.vector_norm(ab),
        ]
    )
    return volume.abs() / norms


def cell_coordinates(
    positions: torch.Tensor,
    origin: torch.Tensor,
    box: torch.Tensor | None,
    grid: list[int],
    width: float,
) -> torch.Tensor:
    """Integer cell coordinates ``[n, 3]``, clamped into the grid (NaN-safe).

    Periodic: fractional coordinates wrapped into [0, 1) times the grid size.  Open:
    ``(r - origin) / width``; atoms beyond the last cell are clamped into it, which keeps
    every pair within ``width`` in the same or adjacent cells.
    """
    # per-axis Python numbers only: a tensor made from a list would be a host-to-device
    # copy, which a CUDA graph cannot capture
    if box is not None:
        frac = fractional(positions, box)
        frac = frac - torch.floor(frac)
        scaled = torch.stack([frac[:, 0] * grid[0], frac[:, 1] * grid[1], frac[:, 2] * grid[2]], dim=1)
    else:
        scaled = (positions - origin) / width
    scaled = torch.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0)
    cells = torch.floor(scaled).clamp(min=0.0)
    cells = torch.stack([cells[:, k].clamp(max=float(grid[k] - 1)) for k in range(3)], dim=1)
    return cells.to(torch.long)


def neighbour_offsets(grid: list[int], periodic: bool) -> list[list[int]]:
    """Cell offsets to visit: -1, 0, 1 along each axis with 3 or more cells (or open),
    0 along a periodic axis with fewer (its one cell holds every atom)."""
    axes: list[list[int]] = []
    for size in grid:
        if periodic and size < 3:
            axes.append([0])
        else:
            axes.append([-1, 0, 1])
    offsets: list[list[int]] = []
    for dx in axes[0]:
        for dy in axes[1]:
            for dz in axes[2]:
                offsets.append([dx, dy, dz])
    return offsets


def cell_candidates(
    queries: torch.Tensor,
    targets: torch.Tensor,
    box: torch.Tensor | None,
    grid: list[int],
    width: float,
    slots: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(query index ``[P]``, target index ``[P]`` (``len(targets)`` = empty slot), overflow)
    with ``P = len(queries) x (neighbour cells) x slots``."""
    nt = targets.shape[0]
    nq = queries.shape[0]
    device = queries.device
    periodic = box is not None
    origin = torch.zeros(3, dtype=queries.dtype, device=device)
    if not periodic:
        lower = torch.minimum(queries.detach().min(dim=0).values, targets.detach().min(dim=0).values)
        origin = torch.nan_to_num(lower, nan=0.0, posinf=0.0, neginf=0.0)
    ncell = grid[0] * grid[1] * grid[2]
    target_cells = cell_coordinates(targets.detach(), origin, box, grid, width)
    flat = (target_cells[:, 0] * grid[1] + target_cells[:, 1]) * grid[2] + target_cells[:, 2]
    counts = torch.zeros(ncell, dtype=torch.long, device=device)
    counts = counts.index_add(0, flat, torch.ones_like(flat))
    order = torch.argsort(flat, stable=True)
    start = torch.cumsum(counts, dim=0) - counts
    rank = torch.arange(nt, device=device) - start[flat[order]]
    # slot table [(ncell + 1) * slots + 1]: the extra cell is the "outside the grid" cell,
    # the last entry takes targets that did not fit (overflow)
    table = torch.full(((ncell + 1) * slots + 1,), nt, dtype=torch.long, device=device)
    dump = (ncell + 1) * slots
    where = torch.where(rank < slots, flat[order] * slots + rank, torch.full_like(rank, dump))
    table = table.index_put((where,), order)
    table = table[:dump].view(ncell + 1, slots)
    overflow = counts.max() > slots if nt > 0 else torch.zeros((), dtype=torch.bool, device=device)

    query_cells = cell_coordinates(queries.detach(), origin, box, grid, width)
    axes: list[torch.Tensor] = []
    for size in grid:
        if periodic and size < 3:
            axes.append(torch.zeros(1, dtype=torch.long, device=device))
        else:
            axes.append(torch.arange(-1, 2, dtype=torch.long, device=device))
    offsets = torch.cartesian_prod(axes[0], axes[1], axes[2])  # [K, 3], as neighbour_offsets()
    around = query_cells.unsqueeze(1) + offsets.unsqueeze(0)  # [nq, K, 3]
    columns: list[torch.Tensor] = []
    outside = torch.zeros(around.shape[:2], dtype=torch.bool, device=device)
    for k in range(3):
        column = around[..., k]
        if box is not None:
            column = torch.remainder(column, grid[k])
        else:
            outside = outside | (column < 0) | (column >= grid[k])
            column = column.clamp(min=0, max=grid[k] - 1)
        columns.append(column)
    around = torch.stack(columns, dim=2)
    around_flat = (around[..., 0] * grid[1] + around[..., 1]) * grid[2] + around[..., 2]
    around_flat = torch.where(outside, torch.full_like(around_flat, ncell), around_flat)
    target_index = table[around_flat].reshape(nq, -1)  # [nq, K * slots]
    query_index = torch.arange(nq, device=device).unsqueeze(1).expand_as(target_index)
    if box is not None:
        spacing = plane_spacings(box)
        for k in range(3):
            if grid[k] >= 3:
                overflow = overflow | (spacing[k] / grid[k] < width)
    return query_index.reshape(-1), target_index.reshape(-1), overflow


def dense_candidates(nq: int, nt: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (query, target) pair, query-major: ``[nq * nt]`` each."""
    q = torch.arange(nq, device=device).unsqueeze(1).expand(nq, nt)
    t = torch.arange(nt, device=device).unsqueeze(0).expand(nq, nt)
    return q.reshape(-1), t.reshape(-1)


def pack_edges(
    queries: torch.Tensor,
    targets: torch.Tensor,
    query_index: torch.Tensor,
    target_index: torch.Tensor,
    cutoff: float,
    box: torch.Tensor | None,
    exclude: torch.Tensor | None,
    drop_self: bool,
    capacity: int,
) -> tuple[Graph, torch.Tensor, torch.Tensor]:
    """Keep the candidate pairs within ``cutoff`` in ``capacity`` slots (query-major order).

    ``target_index == len(targets)`` marks an empty candidate; ``exclude[q]`` is a target
    index masked for query q (its own fragment); ``drop_self`` masks q == t.  ``capacity
    <= 0`` keeps every candidate as a slot (no packing: the dense layout).
    Returns (graph, number of pairs found (0-d), overflow flag).
    """
    nt = targets.shape[0]
    dtype = queries.dtype
    with torch.no_grad():
        safe_t = target_index.clamp(max=max(nt - 1, 0))
        delta = minimum_image(queries.detach()[query_index] - targets.detach()[safe_t], box)
        dist = torch.linalg.vector_norm(delta, dim=-1)
        valid = (target_index < nt) & (dist < cutoff)
        if exclude is not None:
            valid = valid & (target_index != exclude[query_index])
        if drop_self:
            valid = valid & (target_index != query_index)
        found = valid.sum()
        if capacity > 0:
            slot = torch.cumsum(valid.to(torch.long), dim=0) - 1
            keep = valid & (slot < capacity)
            slot = torch.where(keep, slot, torch.full_like(slot, capacity))
            chosen = torch.full((capacity + 1,), -1, dtype=torch.long, device=queries.device)
            chosen = chosen.index_put((slot,), torch.arange(slot.shape[0], device=queries.device))
            chosen = chosen[:capacity]
            inside = chosen >= 0
            chosen = chosen.clamp(min=0)
            receivers = torch.where(inside, query_index[chosen], torch.zeros_like(chosen))
            senders = torch.where(inside, safe_t[chosen], torch.zeros_like(chosen))
            overflow = found > capacity
        else:
            inside = valid
            receivers = query_index
            senders = safe_t
            overflow = torch.zeros((), dtype=torch.bool, device=queries.device)
    raw = minimum_image(queries[receivers] - targets[senders], box)
    pad = torch.zeros_like(raw)
    pad[:, 0] = 1.0e3  # unused slots: a constant vector 1000 A long, far outside any cutoff
    vectors = torch.where(inside.unsqueeze(1), raw, pad.to(dtype))
    distances = torch.linalg.vector_norm(vectors, dim=-1)
    return (receivers, senders, vectors, distances, inside), found, overflow


#: a graph plan: (mode 'cells' or 'dense', grid [3], cell width, slots per cell, capacity)
Plan = tuple[str, list[int], float, int, int]


def plan_graph(
    queries: torch.Tensor,
    targets: torch.Tensor,
    cutoff: float,
    box: torch.Tensor | None,
    exclude: torch.Tensor | None,
    drop_self: bool,
    growth: float = 1.3,
    allow_dense: bool = True,
) -> Plan:
    """Sizes for :func:`build_graph` from one geometry, with head room ``growth`` so the
    graph keeps its shapes while the system moves (runs once, on the host).

    'dense' (every (query, target) pair is a slot, nothing packed) is chosen when that is no
    more than twice the packed capacity; otherwise a cell list whose cells are at least
    ``cutoff`` wide, ``growth`` x the fullest cell (+ 4) slots per cell, and ``growth`` x the
    pairs found (+ 64) edge slots.
    """
    nq = queries.shape[0]
    nt = targets.shape[0]
    with torch.no_grad():
        q = queries.detach()
        t = targets.detach()
        grid: list[int] = []
        if box is not None:
            spacing: list[float] = plane_spacings(box.detach()).tolist()
            for s in spacing:
                g = max(int(math.floor(s / (cutoff * 1.02))), 1)
                grid.append(g if g >= 3 else 1)
        else:
            both = torch.cat([q, t], dim=0)
            extent: list[float] = (both.max(dim=0).values - both.min(dim=0).values).tolist()
            for e in extent:
                grid.append(max(int(math.floor(e / cutoff)) + 2, 1))
        ncell = grid[0] * grid[1] * grid[2]
        origin = torch.zeros(3, dtype=q.dtype, device=q.device)
        if box is None:
            origin = torch.minimum(q.min(dim=0).values, t.min(dim=0).values)
        cells = cell_coordinates(t, origin, box, grid, cutoff)
        flat = (cells[:, 0] * grid[1] + cells[:, 1]) * grid[2] + cells[:, 2]
        fullest = 1
        if nt > 0:
            fullest = int(torch.bincount(flat, minlength=ncell).max())
        qi, ti, _ = cell_candidates(q, t, box, grid, cutoff, max(fullest, 1))
        _, found, _ = pack_edges(q, t, qi, ti, cutoff, box, exclude, drop_self, qi.shape[0] + 1)
        pairs = int(found)
    slots = int(math.ceil(growth * fullest)) + 4
    capacity = int(math.ceil(growth * pairs)) + 64
    candidates = nq * len(neighbour_offsets(grid, box is not None)) * slots
    if allow_dense and nq * nt <= min(candidates, 2 * capacity):
        return ("dense", grid, cutoff, slots, 0)
    return ("cells", grid, cutoff, slots, capacity)


def build_graph(
    queries: torch.Tensor,
    targets: torch.Tensor,
    cutoff: float,
    box: torch.Tensor | None,
    exclude: torch.Tensor | None,
    drop_self: bool,
    mode: str,
    grid: list[int],
    width: float,
    slots: int,
    capacity: int,
) -> tuple[Graph, torch.Tensor]:
    """The graph of a plan (see :class:`GraphPlan`): (graph, overflow flag)."""
    if mode == "dense":
        qi, ti = dense_candidates(queries.shape[0], targets.shape[0], queries.device)
        graph, _, overflow = pack_edges(queries, targets, qi, ti, cutoff, box, exclude, drop_self, 0)
        return graph, overflow
    qi, ti, cell_overflow = cell_candidates(queries, targets, box, grid, width, slots)
    graph, _, overflow = pack_edges(queries, targets, qi, ti, cutoff, box, exclude, drop_self, capacity)
    return graph, overflow | cell_overflow

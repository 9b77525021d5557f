"""Neighbour graphs of the two stages, as flat edge lists.

Every function returns ``(receivers, senders, vectors, distances, inside)``:
``receivers``/``senders`` are ``[E]`` long, ``vectors`` ``[E, 3]`` = r_receiver - r_sender in
Angstrom (minimum image under periodic boundaries), ``distances`` ``[E]`` and ``inside``
``[E]`` bool (edge within the cutoff; the reference graph also carries masked slots).
The box is ``[3, 3]`` with lattice vectors as rows in OpenMM's reduced form (a along x,
b in the xy plane) or ``None`` for no periodicity.
"""

from __future__ import annotations

import torch
from vesin_torch import NeighborList

Graph = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

MASKED_DISTANCE = 1.0e4  # distance given to excluded slots (self, own fragment)


def check_box(box: torch.Tensor, cutoff: float) -> None:
    """Raise if a periodic box is too small for minimum-image interactions at ``cutoff``."""
    widths = torch.diagonal(box)
    if bool((widths < 2.0 * cutoff).any()):
        nm: list[float] = (widths.detach() / 10.0).tolist()
        raise ValueError(
            "periodic box too small: widths "
            + str(nm)
            + " nm, but every edge must be at least "
            + "twice the largest cutoff ("
            + str(2.0 * cutoff / 10.0)
            + " nm); enlarge the box "
            + "(more solvent padding) or disable periodicity"
        )


def minimum_image(delta: torch.Tensor, box: torch.Tensor | None) -> torch.Tensor:
    """Wrap displacement vectors ``[..., 3]`` into the reduced periodic cell."""
    if box is None:
        return delta
    for k in [2, 1, 0]:
        delta = delta - torch.round(delta[..., k : k + 1] / box[k, k]) * box[k]
    return delta


def radius_graph(positions: torch.Tensor, cutoff: float, box: torch.Tensor | None) -> Graph:
    """All ordered pairs i != j closer than ``cutoff`` (O(N) cell list from vesin)."""
    n = positions.shape[0]
    periodic = box is not None
    cell = box if box is not None else torch.zeros((3, 3), dtype=positions.dtype)
    calculator = NeighborList(cutoff=cutoff, full_list=True)
    i, j, shifts = calculator.compute(
        points=positions.detach().cpu(),
        box=cell.detach().cpu(),
        periodic=periodic,
        quantities="ijS",
        copy=True,
    )
    i = i.to(positions.device)
    j = j.to(positions.device)
    vectors = positions[i] - positions[j]
    if box is not None:
        vectors = vectors - shifts.to(positions.device, positions.dtype) @ box
    distances = torch.linalg.vector_norm(vectors, dim=-1)
    keep = (distances < cutoff) & (distances > 1e-4)
    if n == 0:
        keep = keep & False
    return (
        i[keep],
        j[keep],
        vectors[keep],
        distances[keep],
        torch.ones_like(distances[keep], dtype=torch.bool),
    )


def slot_graph(
    positions: torch.Tensor,
    targets: torch.Tensor,
    cutoff: float,
    max_slots: int,
    box: torch.Tensor | None,
    exclude: torch.Tensor | None,
    drop_self: bool,
) -> Graph:
    """The authors' dense "slot" graph: each receiver keeps its K nearest targets.

    K = min(#targets, max_slots, largest number of targets within ``cutoff`` of any
    receiver), at least 1; slots beyond the cutoff stay in the graph with ``inside`` False
    (they still enter the attention maximum).  ``drop_self`` moves coincident pairs to
    the end before the cut; ``exclude[i]`` (a target index per receiver) is masked after it.
    Cost O(N x targets): for checkpoint fidelity, not for large systems.
    """
    n = positions.shape[0]
    delta = minimum_image(positions.unsqueeze(1) - targets.unsqueeze(0), box)
    dist = torch.linalg.vector_norm(delta, dim=-1)
    if drop_self:
        dist = torch.where(dist < 1e-4, torch.full_like(dist, 1.0e4), dist)
    within = int((dist <= cutoff).sum(dim=1).max()) if n > 0 else 0
    k = max(min(targets.shape[0], max_slots, within), 1)
    order = torch.sort(dist, dim=1, stable=True).indices[:, :k]
    slot_dist = torch.gather(dist, 1, order)
    if exclude is not None:
        slot_dist = torch.where(order == exclude.unsqueeze(1), torch.full_like(slot_dist, 1.0e4), slot_dist)
    receivers = torch.arange(n, device=positions.device).repeat_interleave(k)
    senders = order.reshape(-1)
    vectors = delta[receivers, senders]
    distances = slot_dist.reshape(-1)
    return receivers, senders, vectors, distances, distances <= cutoff


def fragment_graph(
    positions: torch.Tensor,
    centres: torch.Tensor,
    fragment_ids: torch.Tensor,
    cutoff: float,
    box: torch.Tensor | None,
) -> Graph:
    """Every (atom, fragment) pair within ``cutoff``, the atom's own fragment excluded."""
    with torch.no_grad():
        dist = torch.linalg.vector_norm(
            minimum_image(positions.unsqueeze(1) - centres.unsqueeze(0), box), dim=-1
        )
        own = torch.arange(centres.shape[0], device=positions.device).unsqueeze(0) == fragment_ids.unsqueeze(
            1
        )
        pairs = torch.nonzero((dist < cutoff) & ~own)
    receivers = pairs[:, 0]
    senders = pairs[:, 1]
    vectors = minimum_image(positions[receivers] - centres[senders], box)
    distances = torch.linalg.vector_norm(vectors, dim=-1)
    return receivers, senders, vectors, distances, torch.ones_like(receivers, dtype=torch.bool)


def fragment_centroids(
    positions: torch.Tensor, fragment_ids: torch.Tensor, num_fragments: int, box: torch.Tensor | None
) -> torch.Tensor:
    """Unweighted mean position of each fragment ``[F, 3]``, a differentiable function of the
    positions; under periodic boundaries atoms are first unwrapped next to the fragment's
    first atom, so a fragment split across the cell edge gets the right centre."""
    n = positions.shape[0]
    first = torch.full((num_fragments,), n, dtype=torch.long, device=positions.device)
    first = first.scatter_reduce(0, fragment_ids, torch.arange(n, device=positions.device), "amin")
    anchor = positions[first]
    offsets = minimum_image(positions - anchor[fragment_ids], box)
    total = torch.zeros((num_fragments, 3), dtype=positions.dtype, device=positions.device)
    total = total.index_add(0, fragment_ids, offsets)
    counts = torch.zeros((num_fragments,), dtype=positions.dtype, device=positions.device)
    counts = counts.index_add(0, fragment_ids, torch.ones_like(positions[:, 0]))
    return anchor + total / counts.unsqueeze(1)

"""Structures as tensors, and evaluation of a batch of structures in few network calls.

The network takes one system per call, with one total charge. A batch is evaluated by grouping
its structures by total charge and, within a group, placing them side by side ``gap`` Å apart
(more than the long-range cutoff, so no atom sees another structure's atoms or fragments), fragment
ids offset so they never collide; per-atom energies are then summed per structure. The charge
enters the network as ``charge * charge_embedding`` added to every atom, so each call must hold
structures of a single total charge. Models with a Coulomb term (``electrostatics``) see one
structure per call: their charges add up per call and their Coulomb sum has no cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..data.structure import Structure


@dataclass
class Sample:
    """One labelled structure as tensors: positions ``[N, 3]`` Å, numbers ``[N]``, fragments ``[N]``,
    energy ``[]`` eV, forces ``[N, 3]`` eV/Å."""

    id: str
    group: str
    positions: torch.Tensor
    numbers: torch.Tensor
    fragments: torch.Tensor
    charge: float
    energy: torch.Tensor
    forces: torch.Tensor

    @property
    def num_atoms(self) -> int:
        return int(self.numbers.shape[0])

    def to(self, device) -> Sample:
        """A copy with every tensor on ``device``."""
        moved = {
            k: getattr(self, k).to(device) for k in ("positions", "numbers", "fragments", "energy", "forces")
        }
        return replace(self, **moved)


def to_sample(structure: Structure, group: str = "", dtype=torch.float32) -> Sample:
    if not structure.labelled:
        raise ValueError(f"structure {structure.id} has no energy/forces labels")
    return Sample(
        id=structure.id,
        group=group,
        positions=torch.tensor(structure.positions, dtype=dtype),
        numbers=torch.tensor(structure.numbers, dtype=torch.long),
        fragments=torch.tensor(structure.fragment_ids, dtype=torch.long),
        charge=float(structure.charge),
        energy=torch.tensor(float(structure.energy), dtype=torch.float64),
        forces=torch.tensor(structure.forces, dtype=dtype),
    )


def predict(model, samples: list[Sample], gap: float = 40.0, create_graph: bool = False):
    """(energies ``[B]`` eV, list of forces ``[N_b, 3]`` eV/Å) for ``samples`` in input order.

    ``create_graph=True`` keeps the graph of the forces for a force loss.
    """
    energies: list[torch.Tensor | None] = [None] * len(samples)
    forces: list[torch.Tensor | None] = [None] * len(samples)
    groups: list[tuple[float, list[int]]] = []
    if getattr(model, "electrostatic", False):
        # a Coulomb term has no cutoff and its charges add up per call: one structure per call
        groups = [(s.charge, [i]) for i, s in enumerate(samples)]
    else:
        by_charge: dict[float, list[int]] = {}
        for i, s in enumerate(samples):
            by_charge.setdefault(s.charge, []).append(i)
        groups = list(by_charge.items())
    for charge, members in groups:
        pos, offset, frag_offset = [], 0.0, 0
        numbers, frags, owner = [], [], []
        for k, i in enumerate(members):
            p = samples[i].positions
            lo, hi = p.min(dim=0).values, p.max(dim=0).values
            shift = torch.zeros(3, dtype=p.dtype, device=p.device)
            shift[0] = offset - lo[0]
            pos.append(p + shift)
            offset += float(hi[0] - lo[0]) + gap
            numbers.append(samples[i].numbers)
            frags.append(samples[i].fragments + frag_offset)
            frag_offset += int(samples[i].fragments.max()) + 1
            owner.append(torch.full((samples[i].num_atoms,), k, dtype=torch.long, device=p.device))
        positions = torch.cat(pos).detach().requires_grad_(True)
        owner_t = torch.cat(owner)
        atom_e = model.per_atom_energies(
            positions,
            torch.cat(numbers),
            torch.cat(frags),
            torch.tensor(charge, dtype=positions.dtype, device=positions.device),
        )
        e = torch.zeros(len(members), dtype=atom_e.dtype, device=atom_e.device).index_add(0, owner_t, atom_e)
        (grad,) = torch.autograd.grad(e.sum(), positions, create_graph=create_graph)
        f = -grad
        start = 0
        for k, i in enumerate(members):
            n = samples[i].num_atoms
            energies[i] = e[k]
            forces[i] = f[start : start + n]
            start += n
    return torch.stack(energies), forces


def fit_reference_energies(samples: list[Sample], num_embeddings: int, ridge: float = 1e-8) -> torch.Tensor:
    """Per-element energies ``[num_embeddings]`` (eV) minimising sum_s (E_s - sum_i e_{Z_i})^2.

    Solved by least squares on the element-count matrix; elements absent from the data get 0.
    """
    elements = sorted({int(z) for s in samples for z in s.numbers.tolist()})
    column = {z: j for j, z in enumerate(elements)}
    counts = np.zeros((len(samples), len(elements)))
    for i, s in enumerate(samples):
        for z, n in zip(*np.unique(s.numbers.cpu().numpy(), return_counts=True), strict=False):
            counts[i, column[int(z)]] = n
    target = np.array([float(s.energy) for s in samples])
    a = counts.T @ counts + ridge * np.eye(len(elements))
    solution = np.linalg.solve(a, counts.T @ target)
    out = torch.zeros(num_embeddings, dtype=torch.float64)
    for z, j in column.items():
        out[z] = solution[j]
    return out

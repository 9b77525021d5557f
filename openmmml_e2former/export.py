"""Wrap an E2Former-LSR network for OpenMM and save it as TorchScript.

This is the one place where units change: OpenMM gives positions and box vectors in nm
and wants energies in kJ/mol; the network works in Angstrom and predicts energies in
``model.config.energy_unit`` (eV for our models, kcal/mol for the authors' checkpoints).

The wrapped module has the TorchForce signature ``forward(positions[, boxvectors]) ->
energy``; atomic numbers, fragment ids, the total charge, the ML atom indices and the
link-atom caps are buffers baked in at export time.  A saved module needs the vesin-torch
operators at load time: ``import vesin_torch`` (``import openmmml_e2former`` does it)
before ``openmmtorch.TorchForce(path)`` in a fresh process.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .model import E2FormerLSR
from .model.graph import minimum_image

NM_TO_ANGSTROM = 10.0
# 1 eV in kJ/mol: elementary charge (C) x Avogadro constant / 1000 (exact since SI 2019).
EV_TO_KJ_PER_MOL = 1.602176634e-19 * 6.02214076e23 / 1000.0
# kJ/mol per unit of each energy unit a network may predict in (thermochemical calorie).
KJ_PER_MOL = {"eV": EV_TO_KJ_PER_MOL, "kcal/mol": 4.184, "kJ/mol": 1.0}

# Bond lengths (Angstrom) of the hydrogen caps put on cut bonds, by element of the ML atom.
CAP_BOND_LENGTH = {1: 0.74, 6: 1.09, 7: 1.01, 8: 0.96, 15: 1.42, 16: 1.34}


class OpenMMModule(nn.Module):
    """``forward(positions [n_system, 3] nm, boxvectors [3, 3] nm or None) -> energy kJ/mol``.

    ``atom_indices`` picks the ML atoms out of the System; ``cap_pairs`` ``[L, 2]`` lists
    (ML atom, outside atom) for every covalent bond the ML region cuts: a hydrogen is placed
    on that bond at ``cap_lengths`` Angstrom from the ML atom, so its force flows back to
    both real atoms through autograd.
    """

    def __init__(
        self,
        model: E2FormerLSR,
        atomic_numbers: Sequence[int],
        fragment_ids: Sequence[int],
        charge: float = 0.0,
        atom_indices: Sequence[int] | None = None,
        cap_pairs: Sequence[Sequence[int]] | None = None,
        periodic: bool = False,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.model = model.to(dtype)
        n = len(atomic_numbers)
        indices = list(range(n)) if atom_indices is None else list(atom_indices)
        pairs = [tuple(p) for p in (cap_pairs or [])]
        owner = {atom: k for k, atom in enumerate(indices)}
        cap_numbers = [1] * len(pairs)
        cap_fragments = [int(fragment_ids[owner[a]]) for a, _ in pairs]
        cap_lengths = [CAP_BOND_LENGTH.get(int(atomic_numbers[owner[a]]), 1.09) for a, _ in pairs]
        self.register_buffer("atom_indices", torch.tensor(indices, dtype=torch.long))
        self.register_buffer(
            "atomic_numbers", torch.tensor(list(atomic_numbers) + cap_numbers, dtype=torch.long)
        )
        self.register_buffer(
            "fragment_ids", torch.tensor([int(f) for f in fragment_ids] + cap_fragments, dtype=torch.long)
        )
        self.register_buffer("charge", torch.tensor(float(charge), dtype=dtype))
        self.register_buffer("cap_pairs", torch.tensor(pairs, dtype=torch.long).reshape(-1, 2))
        self.register_buffer("cap_lengths", torch.tensor(cap_lengths, dtype=dtype))
        self.periodic = periodic
        self.has_caps = len(pairs) > 0
        self.energy_scale = KJ_PER_MOL[model.config.energy_unit]
        self.length_scale = NM_TO_ANGSTROM

    def forward(self, positions: torch.Tensor, boxvectors: torch.Tensor | None = None) -> torch.Tensor:
        dtype = self.charge.dtype
        angstrom = positions.to(dtype) * self.length_scale
        coords = angstrom[self.atom_indices]
        box: torch.Tensor | None = None
        if self.periodic and boxvectors is not None:
            box = boxvectors.to(dtype) * self.length_scale
        if self.has_caps:
            inner = angstrom[self.cap_pairs[:, 0]]
            bond = minimum_image(angstrom[self.cap_pairs[:, 1]] - inner, box)
            unit = bond / bond.pow(2).sum(dim=-1, keepdim=True).sqrt()
            coords = torch.cat([coords, inner + self.cap_lengths.unsqueeze(1) * unit], dim=0)
        energy = self.model(coords, self.atomic_numbers, self.fragment_ids, self.charge, box, None)
        return (energy * self.energy_scale).to(torch.float64)


def script_module(module: OpenMMModule) -> torch.jit.ScriptModule:
    """TorchScript version of a wrapped model (what TorchForce runs)."""
    return torch.jit.script(module.eval())


def save_module(module: OpenMMModule, path: str) -> None:
    """Save the wrapped model as TorchScript that ``openmmtorch.TorchForce(path)`` loads."""
    script_module(module).save(path)


def export_structure(
    checkpoint: str,
    structure: str,
    output: str,
    select: str | None = None,
    precision: str = "single",
    charge: float = 0.0,
    head: str | None = None,
) -> str:
    """Bind a checkpoint to the atoms of a PDB/mmCIF file and save TorchScript (CLI ``export``).

    The saved module takes the positions of *all* atoms of the structure (nm) and the box
    when the structure is periodic; only the ``select``-ed atoms are ML atoms.
    """
    import openmm.app as app

    from .checkpoints import load_checkpoint
    from .fragments import fragment_ids_from_topology

    reader = app.PDBxFile if structure.lower().endswith((".cif", ".mmcif")) else app.PDBFile
    try:
        topology = reader(structure).topology
    except Exception as exc:
        raise ValueError(f"cannot read structure {structure}: {exc}") from exc
    atoms = list(topology.atoms())
    indices = _select_atoms(topology, select) if select else [a.index for a in atoms]
    if not indices:
        raise ValueError(f"the selection {select!r} matches no atom of {structure}")
    model, _ = load_checkpoint(checkpoint, head=head)
    numbers = [atoms[i].element.atomic_number for i in indices]
    fragments = fragment_ids_from_topology(topology, indices)
    cuts = cut_bonds(topology, indices)
    dtype = torch.float64 if precision == "double" else torch.float32
    module = OpenMMModule(
        model, numbers, fragments, charge, indices, cuts, topology.getPeriodicBoxVectors() is not None, dtype
    )
    save_module(module, output)
    return output


def cut_bonds(topology, indices: Sequence[int]) -> list:
    """(ML atom, outside atom) for every bond of ``topology`` that crosses the ML region."""
    selected = set(int(i) for i in indices)
    cuts = []
    for bond in topology.bonds():
        a, b = bond[0].index, bond[1].index
        if (a in selected) != (b in selected):
            cuts.append((a, b) if a in selected else (b, a))
    return cuts


def _select_atoms(topology, selection: str):
    import mdtraj

    return [int(i) for i in mdtraj.Topology.from_openmm(topology).select(selection)]

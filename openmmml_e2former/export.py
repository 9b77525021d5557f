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

import copy
from collections.abc import Sequence

import torch
from torch import nn

from .caps import cap_bond_length, cap_positions
from .host_memory import retain_freed_memory
from .model import E2FormerLSR
from .model.graph import check_box, fragment_centroids, minimum_image
from .model.static_graph import build_graph, plan_graph
from .units import ANGSTROM_PER_NM as NM_TO_ANGSTROM
from .units import KJ_PER_MOL

# Bond lengths (Angstrom) of the hydrogen caps put on cut bonds, by element of the ML atom.


class OpenMMModule(nn.Module):
    """``forward(positions [n_system, 3] nm, boxvectors [3, 3] nm or None) -> energy kJ/mol``.

    ``atom_indices`` picks the ML atoms out of the System; ``cap_pairs`` ``[L, 2]`` lists
    (ML atom, outside atom) for every covalent bond the ML region cuts: a hydrogen is placed
    on that bond at ``cap_lengths`` Angstrom from the ML atom, so its force flows back to
    both real atoms through autograd.

    With ``static_graphs`` (the default for the smooth modes) the neighbour graphs have
    shapes fixed by a plan made on the first call (``model/static_graph.py``), so the call
    has no host synchronisation and suits CUDA graphs and ``torch.compile``; a graph that
    outgrows its plan makes the energy (and so the forces) NaN.  ``host_checks`` lets the
    module look at that flag when it runs on the CPU (where reading it costs nothing) and
    re-plan instead, so there the plan's head room is ``host_growth``, not ``growth``; on a
    GPU the flag is never read inside the call (CUDA graphs), and
    callers that can afford it read ``overflow`` afterwards.  ``docs/speed.md`` explains the
    choices.
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
        static_graphs: bool = True,
        host_checks: bool = True,
        growth: float = 1.3,
        host_growth: float = 1.05,
    ):
        super().__init__()
        retain_freed_memory()  # CPU calls: reuse freed pages (host_memory.py)
        # a frozen copy: autograd then keeps only what the forces need, not every input of every
        # Linear for weight gradients nobody reads (docs/speed.md); the caller's network is untouched
        self.model = copy.deepcopy(model).to(dtype).requires_grad_(False)
        n = len(atomic_numbers)
        indices = list(range(n)) if atom_indices is None else list(atom_indices)
        pairs = [tuple(p) for p in (cap_pairs or [])]
        owner = {atom: k for k, atom in enumerate(indices)}
        cap_numbers = [1] * len(pairs)
        cap_fragments = [int(fragment_ids[owner[a]]) for a, _ in pairs]
        cap_lengths = [cap_bond_length(int(atomic_numbers[owner[a]])) for a, _ in pairs]
        numbers = list(atomic_numbers) + cap_numbers
        fragments = [int(f) for f in fragment_ids] + cap_fragments
        _check_static_inputs(model, numbers, fragments)
        self.register_buffer("atom_indices", torch.tensor(indices, dtype=torch.long))
        self.register_buffer("atomic_numbers", torch.tensor(numbers, dtype=torch.long))
        self.register_buffer("fragment_ids", torch.tensor(fragments, dtype=torch.long))
        self.register_buffer("charge", torch.tensor(float(charge), dtype=dtype))
        self.register_buffer("cap_pairs", torch.tensor(pairs, dtype=torch.long).reshape(-1, 2))
        self.register_buffer("cap_lengths", torch.tensor(cap_lengths, dtype=dtype))
        self.register_buffer("overflow", torch.zeros((), dtype=torch.bool))
        config = model.config
        if periodic and config.electrostatics == "coulomb" and config.coulomb_cutoff <= 0.0:
            raise ValueError(
                "this model's Coulomb term has no cutoff (coulomb_cutoff 0): it cannot run with "
                "periodic boundaries; use a non-periodic system or a model with coulomb_cutoff > 0"
            )
        self.periodic = periodic
        self.has_caps = len(pairs) > 0
        self.energy_scale = KJ_PER_MOL[model.config.energy_unit]
        self.length_scale = NM_TO_ANGSTROM
        self.long_range = model.config.num_long_layers > 0
        self.num_fragments = max(fragments) + 1
        self.local_cutoff = model.config.local_cutoff
        self.long_cutoff = model.config.long_cutoff
        self.static = bool(static_graphs) and model.config.local_mode == "smooth"
        self.static = self.static and model.config.fragment_selection == "all"
        self.host_checks = bool(host_checks)
        self.growth = float(growth)
        self.host_growth = float(host_growth)
        self.planned = False
        self.local_plan: tuple[str, list[int], float, int, int] = ("dense", [1, 1, 1], 1.0, 1, 0)
        self.long_plan: tuple[str, list[int], float, int, int] = ("dense", [1, 1, 1], 1.0, 1, 0)

    def coordinates(
        self, positions: torch.Tensor, boxvectors: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(ML atoms and caps ``[n, 3]`` in Angstrom, box in Angstrom or None)."""
        dtype = self.charge.dtype
        angstrom = positions.to(dtype) * self.length_scale
        coords = angstrom[self.atom_indices]
        box: torch.Tensor | None = None
        if self.periodic and boxvectors is not None:
            box = boxvectors.to(dtype) * self.length_scale
        if self.has_caps:
            inner = angstrom[self.cap_pairs[:, 0]]
            bond = minimum_image(angstrom[self.cap_pairs[:, 1]] - inner, box)
            coords = torch.cat([coords, cap_positions(inner, bond, self.cap_lengths)], dim=0)
        return coords, box

    def plan(self, positions: torch.Tensor, boxvectors: torch.Tensor | None = None) -> None:
        """Fix the graph sizes from these positions (nm); host code, run once (and again
        when a graph outgrows its plan and ``host_checks`` is on)."""
        coords, box = self.coordinates(positions.detach(), boxvectors)
        check_finite(coords)
        if box is not None:
            check_box(box, self.model.max_cutoff)
        growth = self.growth
        if self.host_checks and positions.device.type == "cpu":
            growth = self.host_growth  # re-planning is free here: pad less (docs/speed.md)
        self.local_plan = plan_graph(coords, coords, self.local_cutoff, box, None, True, growth)
        if self.long_range:
            centres = fragment_centroids(coords, self.fragment_ids, self.num_fragments, box)
            self.long_plan = plan_graph(
                coords, centres, self.long_cutoff, box, self.fragment_ids, False, growth
            )
        self.planned = True

    def static_energy(
        self, coords: torch.Tensor, box: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(energy in the model's unit, overflow flag) on the planned graphs."""
        mode, grid, width, slots, capacity = self.local_plan
        local, overflow = build_graph(
            coords, coords, self.local_cutoff, box, None, True, mode, grid, width, slots, capacity
        )
        long_graph: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        centres: torch.Tensor | None = None
        if self.long_range:
            centres = fragment_centroids(coords, self.fragment_ids, self.num_fragments, box)
            mode, grid, width, slots, capacity = self.long_plan
            long_graph, long_overflow = build_graph(
                coords,
                centres,
                self.long_cutoff,
                box,
                self.fragment_ids,
                False,
                mode,
                grid,
                width,
                slots,
                capacity,
            )
            overflow = overflow | long_overflow
        if box is not None:
            overflow = overflow | (torch.diagonal(box) < 2.0 * self.model.max_cutoff).any()
        # a NaN atom would drop out of every graph and leave a finite energy
        overflow = overflow | ~torch.isfinite(coords).all()
        energy = self.model.energy_from_graphs(
            self.atomic_numbers,
            self.fragment_ids,
            self.num_fragments,
            self.charge,
            local,
            long_graph,
            self.long_plan[0] == "dense",
            coords,
            box,
            centres,
        )
        return energy, overflow

    def forward(self, positions: torch.Tensor, boxvectors: torch.Tensor | None = None) -> torch.Tensor:
        coords, box = self.coordinates(positions, boxvectors)
        if not self.static:
            energy = self.model(coords, self.atomic_numbers, self.fragment_ids, self.charge, box, None)
            return (energy * self.energy_scale).to(torch.float64)
        host = self.host_checks and positions.device.type == "cpu"
        if host:  # clear errors on the CPU; on a GPU these give NaN (see static_energy)
            check_finite(coords)
            if box is not None:
                check_box(box, self.model.max_cutoff)
        if not self.planned:
            self.plan(positions, boxvectors)
        energy, overflow = self.static_energy(coords, box)
        if host and bool(overflow):
            self.plan(positions, boxvectors)
            energy, overflow = self.static_energy(coords, box)
        self.overflow.copy_(overflow)
        # a graph beyond its plan (or a box below twice the cutoff) gives NaN, never a
        # silently wrong number; NaN also reaches the forces through the product
        invalid = torch.full_like(energy, float("nan"))
        energy = energy * torch.where(overflow, invalid, torch.ones_like(energy))
        return (energy * self.energy_scale).to(torch.float64)

    def plan_summary(self) -> dict:
        """The graph plans as plain data (for logs and benchmarks)."""
        names = ("mode", "grid", "width", "slots", "capacity")
        out = {"static": self.static, "planned": self.planned, "host_checks": self.host_checks}
        out["local"] = dict(zip(names, self.local_plan, strict=True))
        if self.long_range:
            out["long"] = dict(zip(names, self.long_plan, strict=True))
        return out


def check_finite(coords: torch.Tensor) -> None:
    """Raise naming the ML atoms (0-based, in ML-region order) whose positions are NaN/inf."""
    bad = torch.nonzero(~torch.isfinite(coords).all(dim=1)).flatten()
    if bad.shape[0] > 0:
        atoms: list[int] = bad[:10].tolist()
        raise ValueError("E2Former-LSR: positions are NaN or infinite at atom indices " + str(atoms))


def _check_static_inputs(model: E2FormerLSR, numbers: list[int], fragments: list[int]) -> None:
    """What a call no longer checks: elements the model knows, fragment ids >= 0."""
    allowed = set(model.config.elements)
    bad = [(i, z) for i, z in enumerate(numbers) if z not in allowed]
    if bad:
        raise ValueError(
            f"E2Former-LSR: unsupported element(s) (atomic numbers {[z for _, z in bad[:10]]}) at ML atom "
            f"positions {[i for i, _ in bad[:10]]}; supported atomic numbers: {sorted(allowed)}"
        )
    if not numbers:
        raise ValueError("E2Former-LSR: the system has no atoms")
    if min(fragments) < 0:
        raise ValueError("E2Former-LSR: fragment ids must be >= 0")


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

"""The E2Former-LSR network: local equivariant transformer + long-range fragment blocks.

Inputs are positions in Angstrom; the output energy is in eV (the unit of whatever data
the weights were trained on; see the model card).  Pure PyTorch, TorchScript-able.
"""

from __future__ import annotations

import torch
from torch import nn

from ..units import COULOMB
from .attention import EdgeDegreeEmbedding, EquivariantAttention
from .config import E2FormerConfig
from .electrostatics import coulomb_energies, total_charge_shift
from .graph import (
    Graph,
    check_box,
    fragment_centroids,
    fragment_graph,
    minimum_image,
    radius_graph,
    slot_graph,
)
from .layers import EquivariantRMSNorm, GatedFeedForward, GaussianBasis, SO3Linear, polynomial_envelope

#: (atom, fragment) pairs per recomputed chunk of a dense long-range layer (network.recompute)
RECOMPUTE_PAIRS = 1 << 16


class LocalBlock(nn.Module):
    """Pre-norm transformer block: h += Attn(Norm(h)); h += FFN(Norm(h))."""

    def __init__(self, config: E2FormerConfig):
        super().__init__()
        self.norm_attention = EquivariantRMSNorm(config.channels, config.lmax)
        self.source_embedding = nn.Embedding(config.num_embeddings, config.edge_embed_dim)
        nn.init.uniform_(self.source_embedding.weight, -0.001, 0.001)
        self.attention = EquivariantAttention(config, config.local_cutoff, long_range=False)
        self.norm_ffn = EquivariantRMSNorm(config.channels, config.lmax)
        self.ffn = GatedFeedForward(config.channels, config.lmax)

    def forward(
        self,
        h: torch.Tensor,
        atomic_numbers: torch.Tensor,
        receivers: torch.Tensor,
        senders: torch.Tensor,
        vectors: torch.Tensor,
        distances: torch.Tensor,
        inside: torch.Tensor,
        rbf: torch.Tensor,
        envelope: torch.Tensor,
        shift_by_max: bool,
    ) -> torch.Tensor:
        x = self.norm_attention(h)
        h = h + self.attention(
            x,
            x,
            self.source_embedding(atomic_numbers),
            atomic_numbers,
            receivers,
            senders,
            vectors,
            distances,
            inside,
            rbf,
            envelope,
            shift_by_max,
        )
        return h + self.ffn(self.norm_ffn(h))


class LongRangeBlock(nn.Module):
    """Atoms attend to fragment means: h += Attn(h, fragments); h += FFN(Norm(h))."""

    def __init__(self, config: E2FormerConfig):
        super().__init__()
        self.attention = EquivariantAttention(config, config.long_cutoff, long_range=True)
        self.norm_ffn = EquivariantRMSNorm(config.channels, config.lmax)
        self.ffn = GatedFeedForward(config.channels, config.lmax)

    def forward(
        self,
        h: torch.Tensor,
        atomic_numbers: torch.Tensor,
        fragment_ids: torch.Tensor,
        num_fragments: int,
        receivers: torch.Tensor,
        senders: torch.Tensor,
        vectors: torch.Tensor,
        distances: torch.Tensor,
        inside: torch.Tensor,
        rbf: torch.Tensor,
        envelope: torch.Tensor,
        shift_by_max: bool,
        dense: bool = False,
        points: torch.Tensor | None = None,
        centres: torch.Tensor | None = None,
        row_chunk: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (new features, attention message, features after the attention residual);
        ``row_chunk``: see ``EquivariantAttention.dense_forward``."""
        means = fragment_means(h, fragment_ids, num_fragments)
        message = self.attention(
            h,
            means,
            means[:, 0],
            atomic_numbers,
            receivers,
            senders,
            vectors,
            distances,
            inside,
            rbf,
            envelope,
            shift_by_max,
            dense,
            points,
            centres,
            row_chunk,
        )
        mid = h + message
        return mid + self.ffn(self.norm_ffn(mid)), message, mid


def fragment_means(h: torch.Tensor, fragment_ids: torch.Tensor, num_fragments: int) -> torch.Tensor:
    """Mean atom features of each fragment, ``[F, (lmax+1)^2, C]``."""
    total = torch.zeros((num_fragments, h.shape[1], h.shape[2]), dtype=h.dtype, device=h.device)
    total = total.index_add(0, fragment_ids, h)
    counts = torch.zeros((num_fragments,), dtype=h.dtype, device=h.device)
    counts = counts.index_add(0, fragment_ids, torch.ones_like(h[:, 0, 0]))
    return total / counts.clamp(min=1.0).view(-1, 1, 1)


class E2FormerLSR(nn.Module):
    """E2Former with long-short range (LSR) fragment attention.

    ``forward(positions [N, 3] Angstrom, atomic_numbers [N], fragment_ids [N] (0..F-1),
    charge [] (total charge, e), box [3, 3] Angstrom or None, fragment_centres [F, 3] or
    None) -> energy [] in eV``.  Without ``fragment_centres`` the centres are the
    differentiable mean positions of each fragment (exact forces, zero net force).
    """

    def __init__(self, config: E2FormerConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config.channels
        self.lmax = config.lmax
        self.local_cutoff = config.local_cutoff
        self.long_cutoff = config.long_cutoff
        self.max_cutoff = config.max_cutoff
        self.reference_local = config.local_mode == "reference"
        self.topk_fragments = config.fragment_selection == "topk"
        self.max_fragments = config.max_fragments
        self.max_neighbors = config.max_neighbors
        self.token_embedding = nn.Embedding(config.num_embeddings, config.embed_dim)
        self.embed_linear = nn.Linear(config.embed_dim, c)
        self.embed_norm = nn.LayerNorm(c, eps=1e-6)
        self.atom_linear = nn.Linear(c, c)
        self.charge_embedding = nn.Parameter(torch.zeros(c))
        self.local_basis = GaussianBasis(config.num_basis, config.local_cutoff)
        self.edge_degree = EdgeDegreeEmbedding(config, smooth=not self.reference_local)
        self.local_blocks = nn.ModuleList([LocalBlock(config) for _ in range(config.num_local_layers)])
        self.norm_local = EquivariantRMSNorm(c, config.lmax)
        self.long_blocks = nn.ModuleList([LongRangeBlock(config) for _ in range(config.num_long_layers)])
        # one radial basis for every long-range layer (checkpoints.py): layer 0's, shared
        for block in self.long_blocks[1:]:
            block.attention.basis = self.long_blocks[0].attention.basis
        self.norm_output = EquivariantRMSNorm(c, config.lmax)
        self.final_linear = SO3Linear(2 * c, c, config.lmax)
        self.energy_head = nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, 1))
        # learned charges + screened Coulomb (electrostatics.py); absent from plain checkpoints
        self.electrostatic = config.electrostatics == "coulomb"
        heads = [nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, 1))] if self.electrostatic else []
        self.charge_heads = nn.ModuleList(heads)
        self.coulomb_constant = COULOMB[config.energy_unit]
        self.coulomb_sigma = config.coulomb_sigma
        self.coulomb_cutoff = config.coulomb_cutoff
        self.register_buffer("reference_energies", torch.zeros(config.num_embeddings))
        # a run-time setting, not part of the function: recompute activations in the backward
        # pass instead of keeping them (eager and torch.compile only; docs/speed.md, "Less memory")
        self.recompute = False
        supported = torch.zeros(config.num_embeddings, dtype=torch.bool)
        supported[torch.tensor(config.elements, dtype=torch.long)] = True
        self.register_buffer("supported", supported)

    def forward(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        fragment_ids: torch.Tensor,
        charge: torch.Tensor,
        box: torch.Tensor | None = None,
        fragment_centres: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.per_atom_energies(
            positions, atomic_numbers, fragment_ids, charge, box, fragment_centres
        ).sum()

    def per_atom_energies(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        fragment_ids: torch.Tensor,
        charge: torch.Tensor,
        box: torch.Tensor | None = None,
        fragment_centres: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-atom energies ``[N]`` in eV, per-element reference energies included."""
        features, _ = self.features(
            positions, atomic_numbers, fragment_ids, charge, box, fragment_centres, False
        )
        learned = self.energy_head(features[:, 0]).squeeze(-1)
        learned = learned + self.electrostatic_energies(features, positions, charge, box)
        return learned + self.reference_energies[atomic_numbers].to(learned.dtype)

    def atomic_charges(self, features: torch.Tensor, charge: torch.Tensor) -> torch.Tensor:
        """Learned charges ``[N]`` (e) adding up to ``charge``; zeros without electrostatics."""
        raw = torch.zeros_like(features[:, 0, 0])
        for head in self.charge_heads:
            raw = head(features[:, 0]).squeeze(-1)
        return total_charge_shift(raw, charge)

    def electrostatic_energies(
        self, features: torch.Tensor, positions: torch.Tensor, charge: torch.Tensor, box: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-atom Coulomb energies ``[N]`` of the learned charges (zeros without electrostatics)."""
        if not self.electrostatic:
            return torch.zeros_like(features[:, 0, 0])
        q = self.atomic_charges(features, charge)
        k, sigma, cutoff = self.coulomb_constant, self.coulomb_sigma, self.coulomb_cutoff
        return coulomb_energies(positions, q, box, k, sigma, cutoff)

    def energy_from_graphs(
        self,
        atomic_numbers: torch.Tensor,
        fragment_ids: torch.Tensor,
        num_fragments: int,
        charge: torch.Tensor,
        local_graph: Graph,
        long_graph: Graph | None,
        long_dense: bool = False,
        positions: torch.Tensor | None = None,
        box: torch.Tensor | None = None,
        centres: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Total energy ``[]`` in eV on given graphs (see :meth:`features_from_graphs`);
        ``positions`` (Angstrom) and ``box`` are needed by models with electrostatics;
        ``centres`` ``[F, 3]``, the fragment centres of a non-periodic dense long-range graph
        (with ``positions``), let its sums over fragments run as one matrix product."""
        points: torch.Tensor | None = None
        if long_dense and box is None and centres is not None:
            points = positions
        features, _ = self.features_from_graphs(
            atomic_numbers,
            fragment_ids,
            num_fragments,
            charge,
            local_graph,
            long_graph,
            False,
            long_dense,
            points,
            centres,
        )
        learned = self.energy_head(features[:, 0]).squeeze(-1)
        if self.electrostatic:
            if positions is None:
                raise ValueError("E2Former-LSR: a model with electrostatics needs the positions")
            learned = learned + self.electrostatic_energies(features, positions, charge, box)
        return (learned + self.reference_energies[atomic_numbers].to(learned.dtype)).sum()

    def features(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        fragment_ids: torch.Tensor,
        charge: torch.Tensor,
        box: torch.Tensor | None,
        fragment_centres: torch.Tensor | None,
        collect: bool,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Output features ``[N, (lmax+1)^2, C]`` and, when ``collect``, named intermediates."""
        self.check_inputs(positions, atomic_numbers, fragment_ids, box)
        local_graph = self.local_graph(positions, box)
        long_graph: Graph | None = None
        num_fragments = 0
        if len(self.long_blocks) > 0:
            num_fragments = int(fragment_ids.max()) + 1
            centres = fragment_centres
            if centres is None:
                centres = fragment_centroids(positions, fragment_ids, num_fragments, box)
            long_graph = self.long_graph(positions, centres, fragment_ids, box)
        return self.features_from_graphs(
            atomic_numbers, fragment_ids, num_fragments, charge, local_graph, long_graph, collect
        )

    def features_from_graphs(
        self,
        atomic_numbers: torch.Tensor,
        fragment_ids: torch.Tensor,
        num_fragments: int,
        charge: torch.Tensor,
        local_graph: Graph,
        long_graph: Graph | None,
        collect: bool,
        long_dense: bool = False,
        points: torch.Tensor | None = None,
        centres: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The network on given graphs (``graph.py`` layout): the atom graph within the local
        cutoff and, for LSR models, the (atom, fragment) graph within the long cutoff.  Padded
        graphs (``inside`` False slots) give the same result as packed ones; ``long_dense``
        says the long-range graph holds every (atom, fragment) pair, atom-major."""
        stages: dict[str, torch.Tensor] = {}
        h = self.embed(atomic_numbers, charge, stages, collect)
        h = self.local_stage(atomic_numbers, local_graph, h, stages, collect)
        short = self.norm_local(h)
        if collect:
            stages["norm_final_out"] = short
        if long_graph is None or len(self.long_blocks) == 0:
            return short, stages
        long = self.long_stage(
            atomic_numbers,
            fragment_ids,
            num_fragments,
            long_graph,
            short,
            stages,
            collect,
            long_dense,
            points,
            centres,
        )
        out = self.final_linear(torch.cat([self.norm_output(short), self.norm_output(long)], dim=-1))
        if collect:
            stages["final_linear_out"] = out
        return out, stages

    def embed(
        self,
        atomic_numbers: torch.Tensor,
        charge: torch.Tensor,
        stages: dict[str, torch.Tensor],
        collect: bool,
    ) -> torch.Tensor:
        tokens = self.embed_norm(
            torch.nn.functional.silu(self.embed_linear(self.token_embedding(atomic_numbers)))
        )
        atoms = self.atom_linear(tokens)
        atoms = atoms + charge.to(atoms.dtype) * self.charge_embedding
        if collect:
            stages["embed_proj_out"] = tokens
            stages["atom_embedding"] = atoms
        return atoms

    def local_graph(
        self, positions: torch.Tensor, box: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.reference_local:
            return slot_graph(positions, positions, self.local_cutoff, self.max_neighbors, box, None, True)
        return radius_graph(positions, self.local_cutoff, box)

    def long_graph(
        self,
        positions: torch.Tensor,
        centres: torch.Tensor,
        fragment_ids: torch.Tensor,
        box: torch.Tensor | None,
    ) -> Graph:
        if self.topk_fragments:
            return slot_graph(
                positions, centres, self.long_cutoff, self.max_fragments, box, fragment_ids, False
            )
        return fragment_graph(positions, centres, fragment_ids, self.long_cutoff, box)

    def local_stage(
        self,
        atomic_numbers: torch.Tensor,
        graph: Graph,
        atoms: torch.Tensor,
        stages: dict[str, torch.Tensor],
        collect: bool,
    ) -> torch.Tensor:
        receivers, senders, vectors, distances, inside = graph
        # radial basis and envelope once for the stage: every layer uses the same ones
        rbf = self.local_basis(distances) * inside.unsqueeze(1).to(vectors.dtype)
        envelope = polynomial_envelope(distances, self.local_cutoff)
        h = self.edge_degree(rbf, atomic_numbers, receivers, senders, vectors, distances, inside, envelope)
        if collect:
            stages["edge_degree_embedding"] = h
        h = torch.cat([h[:, :1] + 2.0 * atoms.unsqueeze(1), h[:, 1:]], dim=1)
        for i, block in enumerate(self.local_blocks):
            if collect:
                stages["local_block_" + str(i) + "_in"] = h
            # inline condition: TorchScript drops a branch only where it sees is_scripting()
            if self.recompute and not torch.jit.is_scripting() and torch.is_grad_enabled():
                h = self._recomputed_local_block(
                    i, h, atomic_numbers, receivers, senders, vectors, distances, inside, rbf, envelope
                )
            else:
                h = block(
                    h,
                    atomic_numbers,
                    receivers,
                    senders,
                    vectors,
                    distances,
                    inside,
                    rbf,
                    envelope,
                    self.reference_local,
                )
            if collect:
                stages["local_block_" + str(i) + "_out"] = h
        return h

    def long_stage(
        self,
        atomic_numbers: torch.Tensor,
        fragment_ids: torch.Tensor,
        num_fragments: int,
        graph: Graph,
        h: torch.Tensor,
        stages: dict[str, torch.Tensor],
        collect: bool,
        dense: bool = False,
        points: torch.Tensor | None = None,
        centres: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``points`` ``[N, 3]`` and ``centres`` ``[F, 3]``: positions of a non-periodic dense
        graph (its vectors are ``points[n] - centres[f]``), or None."""
        receivers, senders, vectors, distances, inside = graph
        envelope = polynomial_envelope(distances, self.long_cutoff)
        rbf = torch.zeros(0, dtype=vectors.dtype, device=vectors.device)
        # recomputed dense layers make the radial basis chunk by chunk (_recomputed_long_block)
        lazy_basis = self.recompute and dense and not torch.jit.is_scripting() and torch.is_grad_enabled()
        for i, block in enumerate(self.long_blocks):
            if i == 0 and not lazy_basis:  # one radial basis, shared by every long-range layer
                rbf = block.attention.basis(distances) * inside.unsqueeze(1).to(vectors.dtype)
            if collect:
                stages["cluster_attn_" + str(i) + "_in"] = h
            if self.recompute and not torch.jit.is_scripting() and torch.is_grad_enabled():
                h, message, mid = self._recomputed_long_block(
                    i,
                    h,
                    atomic_numbers,
                    fragment_ids,
                    num_fragments,
                    receivers,
                    senders,
                    vectors,
                    distances,
                    inside,
                    rbf,
                    envelope,
                    dense,
                    points,
                    centres,
                )
            else:
                h, message, mid = block(
                    h,
                    atomic_numbers,
                    fragment_ids,
                    num_fragments,
                    receivers,
                    senders,
                    vectors,
                    distances,
                    inside,
                    rbf,
                    envelope,
                    self.reference_local,
                    dense,
                    points,
                    centres,
                )
            if collect:
                stages["cluster_attn_" + str(i) + "_out"] = message
                stages["norm_ffn_" + str(i) + "_in"] = mid
        return h

    def __setstate__(self, state) -> None:
        # modules pickled before the setting existed (a PythonForce's System, a deepcopy)
        super().__setstate__(state)
        self.__dict__.setdefault("recompute", False)

    @torch.jit.unused
    def _recomputed_local_block(
        self,
        i: int,
        h: torch.Tensor,
        atomic_numbers: torch.Tensor,
        receivers: torch.Tensor,
        senders: torch.Tensor,
        vectors: torch.Tensor,
        distances: torch.Tensor,
        inside: torch.Tensor,
        rbf: torch.Tensor,
        envelope: torch.Tensor,
    ) -> torch.Tensor:
        """Local block ``i`` whose activations are recomputed in the backward pass."""
        from torch.utils.checkpoint import checkpoint

        args = (h, atomic_numbers, receivers, senders, vectors, distances, inside, rbf, envelope)
        return checkpoint(self.local_blocks[i], *args, self.reference_local, use_reentrant=False)

    @torch.jit.unused
    def _recomputed_long_block(
        self,
        i: int,
        h: torch.Tensor,
        atomic_numbers: torch.Tensor,
        fragment_ids: torch.Tensor,
        num_fragments: int,
        receivers: torch.Tensor,
        senders: torch.Tensor,
        vectors: torch.Tensor,
        distances: torch.Tensor,
        inside: torch.Tensor,
        rbf: torch.Tensor,
        envelope: torch.Tensor,
        dense: bool,
        points: torch.Tensor | None,
        centres: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Long-range block ``i`` whose activations are recomputed in the backward pass: in the
        dense layout chunk by chunk of receivers (its (atom, fragment) pair tensors are the
        largest of the network), else the whole block."""
        from torch.utils.checkpoint import checkpoint

        args = (h, atomic_numbers, fragment_ids, num_fragments, receivers, senders, vectors, distances)
        rest = (inside, rbf, envelope, self.reference_local, dense, points, centres)
        if dense:
            # rbf is empty: each chunk makes it with the (shared) basis of the layers
            chunk = max(1, RECOMPUTE_PAIRS // max(1, num_fragments))
            return self.long_blocks[i](*args, *rest, chunk)
        return checkpoint(self.long_blocks[i], *args, *rest, use_reentrant=False)

    def check_inputs(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        fragment_ids: torch.Tensor,
        box: torch.Tensor | None,
    ) -> None:
        n = positions.shape[0]
        if n == 0:
            raise ValueError("E2Former-LSR: the system has no atoms")
        if atomic_numbers.shape[0] != n or fragment_ids.shape[0] != n:
            raise ValueError("E2Former-LSR: positions, atomic_numbers and fragment_ids differ in length")
        bad_position = torch.nonzero(~torch.isfinite(positions).all(dim=1)).flatten()
        if bad_position.shape[0] > 0:
            atoms: list[int] = bad_position[:10].tolist()
            raise ValueError("E2Former-LSR: positions are NaN or infinite at atom indices " + str(atoms))
        in_range = (atomic_numbers >= 0) & (atomic_numbers < self.supported.shape[0])
        ok = in_range & self.supported[atomic_numbers.clamp(0, self.supported.shape[0] - 1)]
        bad_element = torch.nonzero(~ok).flatten()
        if bad_element.shape[0] > 0:
            atoms: list[int] = bad_element[:10].tolist()
            numbers: list[int] = atomic_numbers[bad_element[:10]].tolist()
            allowed: list[int] = self.supported.nonzero().flatten().tolist()
            raise ValueError(
                "E2Former-LSR: unsupported element(s) (atomic numbers "
                + str(numbers)
                + ") at atom indices "
                + str(atoms)
                + "; supported atomic numbers: "
                + str(allowed)
            )
        if bool((fragment_ids < 0).any()):
            raise ValueError("E2Former-LSR: fragment ids must be >= 0")
        if box is not None and self.electrostatic and self.coulomb_cutoff <= 0.0:
            raise ValueError(
                "E2Former-LSR: this model's Coulomb term has no cutoff (coulomb_cutoff 0), so it "
                "cannot run with a periodic box; use a model trained with coulomb_cutoff > 0"
            )
        if box is not None:
            check_box(box, self.max_cutoff)


__all__ = ["E2FormerLSR", "fragment_means", "minimum_image"]

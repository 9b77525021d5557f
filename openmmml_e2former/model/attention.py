"""Equivariant graph attention used by both stages.

Local stage: atoms attend to atoms within the local cutoff.  Long-range stage: atoms
attend to fragment centroids within the long cutoff (the fragment's mean features
provide keys and values).  Attention weights are invariant scalars; messages carry
degrees l <= lmax through :class:`VectorTensorProduct`.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import E2FormerConfig
from .layers import (
    GaussianBasis,
    InvariantProjection,
    SO3Linear,
    mlp,
    scatter_sum,
)
from .so3 import SphericalHarmonics
from .tensor_product import VectorTensorProduct

MAX_SCORE = 60.0  # clamp of unshifted float64 attention scores (exp(60) ~ 1e26)


def smooth_leaky_relu(x: torch.Tensor, slope: float = 0.2) -> torch.Tensor:
    return (1.0 - slope) * x * torch.sigmoid(x) + slope * x


def segment_softmax(
    scores: torch.Tensor,
    envelope: torch.Tensor,
    inside: torch.Tensor,
    receivers: torch.Tensor,
    num_nodes: int,
    eps: float,
    shift_by_max: bool,
) -> torch.Tensor:
    """Smooth softmax over each receiver's edges (float64 with ``shift_by_max``, else in the
    scores' dtype: see docs/speed.md for the float32 error).

    w_e = env_e exp(s_e - m) / (sum over the receiver's edges of env exp(s - m) + eps).
    With ``shift_by_max`` m is the maximum score over all of the receiver's edges (masked
    slots included), as in the authors' code; otherwise m = 0 (scores clamped at
    ``MAX_SCORE``), which keeps the weights continuous when edges enter or leave.
    """
    s = scores.to(torch.float64) if shift_by_max else scores
    if shift_by_max:
        index = receivers.unsqueeze(1).expand_as(s)
        top = torch.full((num_nodes, s.shape[1]), -1.0e300, dtype=s.dtype, device=s.device)
        top = top.scatter_reduce(0, index, s, "amax", include_self=False)
        s = s - top[receivers]
    else:
        s = s.clamp(max=60.0)  # MAX_SCORE
    weight = torch.exp(s) * envelope.to(s.dtype).unsqueeze(1)
    weight = torch.where(inside.unsqueeze(1), weight, torch.zeros_like(weight))
    denom = torch.zeros((num_nodes, s.shape[1]), dtype=s.dtype, device=s.device)
    denom = denom.index_add(0, receivers, weight) + eps
    return (weight / denom[receivers]).to(scores.dtype)


def sigmoid_weights(scores: torch.Tensor, envelope: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Unnormalised edge weights ``env_e sigmoid(s_e)`` (0 outside the cutoff): unlike the
    softmax they do not shrink as a receiver gains edges, so the messages of many far-away
    fragments can add up (``long_attention="sigmoid"``; ``docs/electrostatics.md``)."""
    weight = torch.sigmoid(scores) * envelope.to(scores.dtype).unsqueeze(1)
    return torch.where(inside.unsqueeze(1), weight, torch.zeros_like(weight))


def split_linear(
    weight: torch.Tensor,
    bias: torch.Tensor,
    rbf: torch.Tensor,
    receiver_nodes: torch.Tensor,
    receivers: torch.Tensor,
    sender_nodes: torch.Tensor,
    senders: torch.Tensor,
) -> torch.Tensor:
    """``Linear(cat[rbf, receiver_nodes[receivers], sender_nodes[senders]])`` without building
    the concatenated edge features: the node parts are multiplied once per node and gathered.

    ``weight`` ``[out, nb + R + S]`` and ``bias`` ``[out]`` are those of the ``Linear``;
    ``rbf`` ``[E, nb]``, ``receiver_nodes`` ``[N, R]``, ``sender_nodes`` ``[M, S]``.
    """
    nb = rbf.shape[1]
    nr = receiver_nodes.shape[1]
    out = torch.matmul(rbf, weight[:, :nb].t()) + bias
    out = out + torch.matmul(receiver_nodes, weight[:, nb : nb + nr].t())[receivers]
    return out + torch.matmul(sender_nodes, weight[:, nb + nr :].t())[senders]


class EquivariantAttention(nn.Module):
    """One attention layer; ``long_range`` selects the fragment variant."""

    def __init__(self, config: E2FormerConfig, cutoff: float, long_range: bool):
        super().__init__()
        c, nb = config.channels, config.num_basis
        self.cutoff = cutoff
        self.long_range = long_range
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.channels = c
        self.eps = config.softmax_eps
        self.sum_weights = long_range and config.long_attention == "sigmoid"
        self.basis = GaussianBasis(nb, cutoff)
        self.target_embedding = nn.Embedding(config.num_embeddings, config.edge_embed_dim)
        nn.init.uniform_(self.target_embedding.weight, -0.001, 0.001)
        sender_dim = c if long_range else config.edge_embed_dim
        edge_dim = nb + config.edge_embed_dim + sender_dim
        hidden = min(128, nb // 2)
        self.query = InvariantProjection(c, config.num_heads * config.head_dim, config.lmax)
        self.key = InvariantProjection(c, config.num_heads * config.head_dim, config.lmax)
        self.score_mlp = mlp([edge_dim, hidden, hidden, config.num_heads])
        self.channel_mlp = mlp([edge_dim, hidden, hidden, c])
        self.value = SO3Linear(c, c, config.lmax)
        self.tensor_product = VectorTensorProduct(c, config.lmax)
        self.output = SO3Linear(c, c, config.lmax)

    def forward(
        self,
        x: torch.Tensor,
        senders_x: torch.Tensor,
        sender_scalars: torch.Tensor,
        atomic_numbers: torch.Tensor,
        receivers: torch.Tensor,
        senders: torch.Tensor,
        vectors: torch.Tensor,
        distances: torch.Tensor,
        inside: torch.Tensor,
        rbf: torch.Tensor,
        envelope: torch.Tensor,
        shift_by_max: bool,
        dense: bool = False,
        receiver_points: torch.Tensor | None = None,
        sender_points: torch.Tensor | None = None,
        row_chunk: int = 0,
    ) -> torch.Tensor:
        """Attention message ``[N, (lmax+1)^2, C]`` for receivers with features ``x``.

        ``senders_x`` holds the sender features (atoms for the local stage, fragment
        means for the long-range stage) and ``sender_scalars`` ``[S, D]`` the invariant
        sender descriptor that enters the edge features (an element embedding for atoms,
        the l = 0 features for fragments); the graph tensors are those of ``graph.py``;
        ``rbf`` ``[E, num_basis]`` (zero on masked slots) and ``envelope`` ``[E]`` are this
        layer's radial basis and cutoff envelope, computed once per stage by the caller.
        ``dense``: the graph holds every (receiver, sender) pair, receiver-major (padded
        with ``inside`` False), so the message is summed by matrix products instead of
        gathering sender features per edge (:meth:`dense_forward`; ``receiver_points``
        ``[N, 3]`` and ``sender_points`` ``[M, 3]`` are the positions the non-periodic edge
        vectors ``receiver - sender`` were taken from, or None; ``row_chunk``: see
        :meth:`dense_forward`).
        """
        n = x.shape[0]
        targets = self.target_embedding(atomic_numbers)
        if dense:
            return self.dense_forward(
                x,
                senders_x,
                sender_scalars,
                targets,
                vectors,
                distances,
                inside,
                rbf,
                envelope,
                shift_by_max,
                receiver_points,
                sender_points,
                row_chunk,
            )
        # the score and channel MLPs read the same edge features: one first layer for both
        first_score = self.score_mlp[0]
        first_channel = self.channel_mlp[0]
        hidden = split_linear(
            torch.cat([first_score.weight, first_channel.weight], dim=0),
            torch.cat([first_score.bias, first_channel.bias], dim=0),
            rbf,
            targets,
            receivers,
            sender_scalars,
            senders,
        )
        width = first_score.weight.shape[0]
        score_hidden = hidden[:, :width]
        channel_hidden = hidden[:, width:]
        for i, layer in enumerate(self.score_mlp):
            if i > 0:
                score_hidden = layer(score_hidden)
        for i, layer in enumerate(self.channel_mlp):
            if i > 0:
                channel_hidden = layer(channel_hidden)
        q = self.query(x).view(n, self.num_heads, self.head_dim)
        k = self.key(senders_x).view(-1, self.num_heads, self.head_dim)
        dot = (q[receivers] * k[senders]).sum(dim=-1)
        dot = dot / (self.head_dim**0.5)
        scores = smooth_leaky_relu(score_hidden * dot)
        if self.sum_weights:
            alpha = sigmoid_weights(scores, envelope, inside)
        else:
            alpha = segment_softmax(scores, envelope, inside, receivers, n, self.eps, shift_by_max)
        per_channel = channel_hidden.view(-1, self.num_heads, self.channels // self.num_heads)
        weights = (alpha.unsqueeze(-1) * per_channel).reshape(-1, self.channels)
        weights = weights / (distances.unsqueeze(1) + 1e-8)
        values = self.value(senders_x)
        message = self.tensor_product(values[senders], vectors, weights, receivers, n)
        return self.output(message)

    def dense_forward(
        self,
        x: torch.Tensor,
        senders_x: torch.Tensor,
        sender_scalars: torch.Tensor,
        targets: torch.Tensor,
        vectors: torch.Tensor,
        distances: torch.Tensor,
        inside: torch.Tensor,
        rbf: torch.Tensor,
        envelope: torch.Tensor,
        shift_by_max: bool,
        receiver_points: torch.Tensor | None,
        sender_points: torch.Tensor | None,
        row_chunk: int = 0,
    ) -> torch.Tensor:
        """:meth:`forward` when the graph holds every (receiver, sender) pair, receiver-major.

        The same function as the edge-list path, laid out for matrix products: node parts of
        the edge MLPs are broadcast instead of gathered, the softmax sums over a tensor axis,
        and the per-pair weights are made channel-major ``[C, N, M]`` so the sum over senders
        is one batched product (``docs/speed.md``, "Dense (atom, fragment) layout").
        ``row_chunk`` > 0 (with autograd, not TorchScript): receivers in chunks of that many rows,
        each recomputed in the backward pass, so no more than a chunk's pair tensors exist at
        once (under ``torch.compile`` the loop is unrolled: one region per chunk).
        """
        m = senders_x.shape[0]
        nb = rbf.shape[1] if rbf.dim() == 2 else self.basis.offset.shape[0]
        if shift_by_max and not self.sum_weights:
            # static (dense) graphs exist only for the smooth modes (export.py)
            raise RuntimeError("the dense (atom, fragment) layout needs local_mode='smooth'")
        nt = targets.shape[1]
        # sender-side parts, shared by every receiver row
        senders_first: list[torch.Tensor] = []
        for first in (self.score_mlp[0], self.channel_mlp[0]):
            senders_first.append(torch.matmul(sender_scalars, first.weight[:, nb + nt :].t()))
        k = self.key(senders_x).view(m, self.num_heads, self.head_dim)
        values = self.value(senders_x).permute(2, 0, 1)  # [C, M, (lmax+1)^2]
        origin = torch.zeros(3, dtype=values.dtype, device=values.device)
        moments = values
        if sender_points is None:
            receiver_points = None  # both or neither: dense_rows then takes the edge vectors
        if receiver_points is not None and sender_points is not None:
            # u = r_n - c_m: sum_m w (r_n - c_m) v_m = r_n (sum_m w v_m) - sum_m w (c_m v_m), so one
            # product over senders gives all three components (points centred: less rounding)
            origin = receiver_points.detach().mean(dim=0).to(values.dtype)
            p = (sender_points - origin).to(values.dtype)
            moments = torch.cat([values] + [values * p[:, j].view(1, m, 1) for j in range(3)], dim=2)
        if row_chunk > 0 and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return self._chunked_dense_rows(
                row_chunk,
                x,
                targets,
                vectors,
                distances,
                inside,
                rbf,
                envelope,
                receiver_points,
                senders_first[0],
                senders_first[1],
                k,
                values,
                moments,
                origin,
            )
        return self.dense_rows(
            x,
            targets,
            vectors,
            distances,
            inside,
            rbf,
            envelope,
            receiver_points,
            senders_first[0],
            senders_first[1],
            k,
            values,
            moments,
            origin,
        )

    def dense_rows(
        self,
        x: torch.Tensor,
        targets: torch.Tensor,
        vectors: torch.Tensor,
        distances: torch.Tensor,
        inside: torch.Tensor,
        rbf: torch.Tensor,
        envelope: torch.Tensor,
        receiver_points: torch.Tensor | None,
        score_senders: torch.Tensor,
        channel_senders: torch.Tensor,
        k: torch.Tensor,
        values: torch.Tensor,
        moments: torch.Tensor,
        origin: torch.Tensor,
    ) -> torch.Tensor:
        """The message of the receivers ``x`` (rows of the dense grid; pair tensors row-major,
        ``[n * M, ...]``) from the sender-side parts :meth:`dense_forward` prepared."""
        n, m = x.shape[0], k.shape[0]
        heads = self.num_heads
        nb = rbf.shape[1]
        nt = targets.shape[1]
        mlp_in: list[torch.Tensor] = []
        for first, sender in ((self.score_mlp[0], score_senders), (self.channel_mlp[0], channel_senders)):
            w = first.weight
            pair = torch.matmul(rbf, w[:, :nb].t()).view(n, m, -1)
            node = torch.matmul(targets, w[:, nb : nb + nt].t()) + first.bias
            mlp_in.append(pair + node.unsqueeze(1) + sender.unsqueeze(0))
        score_hidden = mlp_in[0]
        channel_hidden = mlp_in[1]
        for i, layer in enumerate(self.score_mlp):
            if i > 0:
                score_hidden = layer(score_hidden)
        last = len(self.channel_mlp) - 1
        for i, layer in enumerate(self.channel_mlp):
            if 0 < i < last:
                channel_hidden = layer(channel_hidden)
        q = self.query(x).view(n, heads, self.head_dim)
        dot = torch.einsum("nhd,mhd->nmh", q, k) / (self.head_dim**0.5)
        scores = smooth_leaky_relu(score_hidden * dot)  # [N, M, H]
        if self.sum_weights:
            alpha = sigmoid_weights(scores.view(n * m, heads), envelope, inside).view(n, m, heads)
        else:
            weight = torch.exp(scores.clamp(max=60.0)) * envelope.view(n, m, 1).to(scores.dtype)  # MAX_SCORE
            weight = torch.where(inside.view(n, m, 1), weight, torch.zeros_like(weight))
            alpha = weight / (weight.sum(dim=1, keepdim=True) + self.eps)
        # per-pair, per-channel weights, channel-major: [C, N, M]
        alpha = alpha / (distances.view(n, m, 1) + 1e-8)
        final = self.channel_mlp[-1]
        flat = channel_hidden.view(n * m, -1)
        per_channel = torch.matmul(final.weight, flat.t()) + final.bias.unsqueeze(1)  # [C, N*M]
        c = self.channels
        weights = per_channel.view(heads, c // heads, n, m) * alpha.permute(2, 0, 1).unsqueeze(1)
        weights = weights.reshape(c, n, m)
        if receiver_points is not None:
            r = (receiver_points - origin).to(values.dtype)
            summed = torch.bmm(weights, moments).view(c, n, 4, -1)
            stacked = r.view(1, n, 3, 1) * summed[:, :, :1] - summed[:, :, 1:]  # [C, N, 3, (lmax+1)^2]
        else:
            u = vectors.view(n, m, 3).permute(2, 0, 1)
            parts = [torch.bmm(weights * u[j].unsqueeze(0), values) for j in range(3)]
            stacked = torch.stack(parts, dim=2)
        message = self.tensor_product.from_components(stacked)
        return self.output(message)

    @torch.jit.unused
    def _chunked_dense_rows(
        self,
        row_chunk: int,
        x: torch.Tensor,
        targets: torch.Tensor,
        vectors: torch.Tensor,
        distances: torch.Tensor,
        inside: torch.Tensor,
        rbf: torch.Tensor,
        envelope: torch.Tensor,
        receiver_points: torch.Tensor | None,
        score_senders: torch.Tensor,
        channel_senders: torch.Tensor,
        k: torch.Tensor,
        values: torch.Tensor,
        moments: torch.Tensor,
        origin: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`dense_rows` over chunks of ``row_chunk`` receivers, each recomputed in the
        backward pass (``torch.utils.checkpoint``): the same function with less memory. An
        empty ``rbf`` (``rbf.dim() != 2``) is computed per chunk with this layer's basis."""
        from torch.utils.checkpoint import checkpoint

        n, m = x.shape[0], k.shape[0]
        lazy = rbf.dim() != 2

        def rows(x, targets, vec, dist, ins, basis, env, points, *shared):
            if lazy:
                basis = self.basis(dist) * ins.unsqueeze(1).to(vec.dtype)
            return self.dense_rows(x, targets, vec, dist, ins, basis, env, points, *shared)

        shared = (score_senders, channel_senders, k, values, moments, origin)
        out = []
        for a in range(0, n, row_chunk):
            b = min(n, a + row_chunk)
            vec = vectors.view(n, m, 3)[a:b].reshape(-1, 3)
            dist, ins, env = (t.view(n, m)[a:b].reshape(-1) for t in (distances, inside, envelope))
            basis = rbf if lazy else rbf.view(n, m, -1)[a:b].reshape(-1, rbf.shape[1])
            points = None if receiver_points is None else receiver_points[a:b]
            args = (x[a:b], targets[a:b], vec, dist, ins, basis, env, points)
            out.append(checkpoint(rows, *args, *shared, use_reentrant=False))
        return torch.cat(out, dim=0)


class EdgeDegreeEmbedding(nn.Module):
    """Initial equivariant features: sum over neighbours of Y_lm(r_ij) * MLP_l(edge)."""

    def __init__(self, config: E2FormerConfig, smooth: bool):
        super().__init__()
        nb = config.num_basis
        self.lmax = config.lmax
        self.cutoff = config.local_cutoff
        self.smooth = smooth
        self.avg_degree = config.avg_degree
        self.source_embedding = nn.Embedding(config.edge_degree_embeddings, nb)
        self.target_embedding = nn.Embedding(config.edge_degree_embeddings, nb)
        hidden = min(nb, 128)
        self.radial = nn.ModuleList(
            [mlp([3 * nb, hidden, hidden, config.channels]) for _ in range(config.lmax + 1)]
        )
        self.harmonics = SphericalHarmonics(config.lmax)

    def forward(
        self,
        rbf: torch.Tensor,
        atomic_numbers: torch.Tensor,
        receivers: torch.Tensor,
        senders: torch.Tensor,
        vectors: torch.Tensor,
        distances: torch.Tensor,
        inside: torch.Tensor,
        envelope: torch.Tensor,
    ) -> torch.Tensor:
        """``envelope`` ``[E]``: the local cutoff envelope (used by the smooth variant)."""
        n = atomic_numbers.shape[0]
        targets = self.target_embedding(atomic_numbers)
        sources = self.source_embedding(atomic_numbers)
        gate = inside.to(rbf.dtype)
        if self.smooth:
            gate = gate * envelope
        sh = self.harmonics(vectors)
        parts = []
        for l, radial in enumerate(self.radial):
            first = radial[0]
            f = split_linear(first.weight, first.bias, rbf, targets, receivers, sources, senders)
            for i, layer in enumerate(radial):
                if i > 0:
                    f = layer(f)
            f = f * gate.unsqueeze(1)
            parts.append(sh[:, l * l : (l + 1) * (l + 1)].unsqueeze(-1) * f.unsqueeze(1))
        per_edge = torch.cat(parts, dim=1)
        return scatter_sum(per_edge, receivers, n) / self.avg_degree

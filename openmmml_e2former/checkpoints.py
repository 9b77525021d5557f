"""Load, save and convert E2Former-LSR weights.

Two formats are understood:

* our own checkpoint: a ``torch.save`` dict ``{"format": "openmmml-e2former", "version": 1,
  "config": {...}, "state_dict": {...}, "metadata": {...}}``;
* the authors' (IQuestLab/UBio-MolFM) state dict, bare or inside a training checkpoint
  under ``"model"``: keys ``decoder.*`` and ``molfm_finetune_head.energy_heads.<name>.*``.
  Hyperparameters are inferred from tensor shapes and the keys are renamed
  (:func:`convert_reference_state_dict`).
"""

from __future__ import annotations

import os
import re

import torch

from .model import E2FormerConfig, E2FormerLSR

FORMAT = "openmmml-e2former"
FORMAT_VERSION = 1

_REF = "decoder.decoder."
# Reference parameters that the authors' forward pass never reads.
_UNUSED = re.compile(
    r"(heads2basis|default_node_embedding|poly1|poly2|pos_embedding_proj|node_scalar_proj"
    r"|alpha_dot|edge_deg_embed_dense\.proj|ga\.norm_1|ga\.norm_2|norm_cluster\.|norm_cluster_long"
    r"|norm_ffn_cluster|norm_tmp|first_order_tp\.components|_w3j_|path_norm|expand_index"
    r"|balance_degree_weight|cluster_blocks\.\d+\.source_embedding|dot_linear)"
)
_ATTENTION = [
    ("target_embedding.", "attention.target_embedding."),
    ("query_linear.final_linear.", "attention.query.mlp."),
    ("key_linear.final_linear.", "attention.key.mlp."),
    ("query_linear.", "attention.query."),
    ("key_linear.", "attention.key."),
    ("fc_easy.net.", "attention.score_mlp."),
    ("rad_func_intputhead.net.", "attention.channel_mlp."),
    ("proj_value.", "attention.value."),
    ("first_order_tp.tensor_product_tp_component_1.weight", "attention.tensor_product.weight"),
    ("proj_first.", "attention.output."),
]
_FFN = [("slinear_1.", "ffn.linear_1."), ("gate.gates.", "ffn.gates."), ("slinear_2.", "ffn.linear_2.")]


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not fit the network."""


def _rename(key: str) -> str | None:
    """Our name for one reference key (without the head prefix), or None if unused."""
    if _UNUSED.search(key):
        return None
    simple = {
        "decoder.embedding.": "token_embedding.",
        "decoder.embed_proj.0.": "embed_linear.",
        "decoder.embed_proj.2.": "embed_norm.",
        _REF + "unifiedtokentoembedding.": "atom_linear.",
        _REF + "rbf.offset": "local_basis.offset",
        _REF + "edge_deg_embed_dense.source_embedding.": "edge_degree.source_embedding.",
        _REF + "edge_deg_embed_dense.target_embedding.": "edge_degree.target_embedding.",
        _REF + "norm_final.": "norm_local.",
        _REF + "norm_cluster_short.": "norm_output.",
        _REF + "final_linear.": "final_linear.",
        _REF + "rbf_cluster.offset": "long_basis_offset",
    }
    for old, new in simple.items():
        if key.startswith(old):
            return new + key[len(old) :]
    m = re.match(re.escape(_REF) + r"edge_deg_embed_dense\.gbf_projs\.(\d+)\.net\.(.*)", key)
    if m:
        return f"edge_degree.radial.{m.group(1)}.{m.group(2)}"
    m = re.match(re.escape(_REF) + r"blocks\.(\d+)\.(.*)", key)
    if m:
        return _rename_local(int(m.group(1)), m.group(2))
    m = re.match(re.escape(_REF) + r"cluster_blocks\.(\d+)\.(.*)", key)
    if m:
        return _rename_sub(f"long_blocks.{m.group(1)}.", m.group(2), _ATTENTION)
    m = re.match(re.escape(_REF) + r"norm_ffn\.(\d+)\.(\d)\.(.*)", key)
    if m:
        prefix = f"long_blocks.{m.group(1)}."
        if m.group(2) == "0":
            return prefix + "norm_ffn." + m.group(3)
        return _rename_sub(prefix, m.group(3), _FFN)
    return "UNKNOWN:" + key


def _rename_local(block: int, rest: str) -> str | None:
    prefix = f"local_blocks.{block}."
    if rest.startswith("norm_1."):
        return prefix + "norm_attention." + rest[len("norm_1.") :]
    if rest.startswith("norm_s3."):
        return prefix + "norm_ffn." + rest[len("norm_s3.") :]
    if rest.startswith("ga.source_embedding."):
        return prefix + "source_embedding." + rest[len("ga.source_embedding.") :]
    if rest.startswith("ga."):
        return _rename_sub(prefix, rest[3:], _ATTENTION)
    if rest.startswith("ffn_s3."):
        return _rename_sub(prefix, rest[len("ffn_s3.") :], _FFN)
    return "UNKNOWN:" + rest


def _rename_sub(prefix: str, rest: str, table: list[tuple[str, str]]) -> str:
    for old, new in table:
        if rest.startswith(old):
            return prefix + new + rest[len(old) :]
    return "UNKNOWN:" + prefix + rest


def reference_heads(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of the energy heads in an authors' state dict."""
    names = set()
    for key in state_dict:
        m = re.match(r"molfm_finetune_head\.energy_heads\.([^.]+)\.", key)
        if m:
            names.add(m.group(1))
    return sorted(names)


def infer_reference_config(state_dict: dict[str, torch.Tensor], **overrides) -> E2FormerConfig:
    """Hyperparameters of an authors' checkpoint, read off its tensor shapes."""
    sd = state_dict

    def get(key: str) -> torch.Tensor:
        if key not in sd:
            raise CheckpointError(f"not an E2Former-LSR checkpoint: key {key!r} is missing")
        return sd[key]

    offsets = get(_REF + "rbf.offset")
    layers = {int(m.group(1)) for k in sd if (m := re.match(re.escape(_REF) + r"blocks\.(\d+)\.", k))}
    long_layers = {
        int(m.group(1)) for k in sd if (m := re.match(re.escape(_REF) + r"cluster_blocks\.(\d+)\.", k))
    }
    heads = get(_REF + "blocks.0.ga.fc_easy.net.6.weight").shape[0]
    qk = get(_REF + "blocks.0.ga.query_linear.final_linear.3.weight").shape[0]
    long_offsets = sd.get(_REF + "rbf_cluster.offset")
    values = dict(
        channels=get("decoder.embed_proj.0.weight").shape[0],
        embed_dim=get("decoder.embedding.weight").shape[1],
        num_embeddings=get("decoder.embedding.weight").shape[0],
        lmax=get(_REF + "blocks.0.ga.proj_value.weight").shape[0] - 1,
        num_local_layers=len(layers),
        num_long_layers=len(long_layers),
        num_heads=heads,
        head_dim=qk // heads,
        num_basis=offsets.shape[0],
        edge_embed_dim=get(_REF + "blocks.0.ga.target_embedding.weight").shape[1],
        edge_degree_embeddings=get(_REF + "edge_deg_embed_dense.source_embedding.weight").shape[0],
        local_cutoff=round(float(offsets[-1]), 6),
        long_cutoff=round(float(long_offsets[-1]), 6) if long_offsets is not None else 18.0,
        local_mode="reference",
        fragment_selection="topk",
        elements=list(range(1, 119)),
    )
    values.update(overrides)
    return E2FormerConfig(**values)


def convert_reference_state_dict(
    state_dict: dict[str, torch.Tensor], head: str | None = None, **config_overrides
) -> tuple[E2FormerConfig, dict[str, torch.Tensor]]:
    """Rename an authors' state dict to ours; returns (config, our state dict).

    ``head`` picks the energy head when the checkpoint has several.
    """
    heads = reference_heads(state_dict)
    if not heads:
        raise CheckpointError("no energy head (molfm_finetune_head.energy_heads.*) in the checkpoint")
    if head is None:
        if len(heads) > 1:
            raise CheckpointError(f"the checkpoint has several energy heads {heads}; choose one with head=")
        head = heads[0]
    if head not in heads:
        raise CheckpointError(f"unknown energy head {head!r}; available: {heads}")
    config = infer_reference_config(state_dict, **config_overrides)
    ours: dict[str, torch.Tensor] = {}
    head_prefix = f"molfm_finetune_head.energy_heads.{head}."
    for key, value in state_dict.items():
        if key.startswith("molfm_finetune_head."):
            if key.startswith(head_prefix):
                ours["energy_head." + key[len(head_prefix) :]] = value
            continue
        new = _rename(key)
        if new is None:
            continue
        if new.startswith("UNKNOWN:"):
            raise CheckpointError(f"unexpected key in the authors' checkpoint: {key}")
        if new == "long_basis_offset":
            for i in range(config.num_long_layers):
                ours[f"long_blocks.{i}.attention.basis.offset"] = value
            continue
        if new.endswith("query.bias") or new.endswith("key.bias"):
            value = value.reshape(-1)
        ours[new] = value
    for i in range(config.num_local_layers):
        ours[f"local_blocks.{i}.attention.basis.offset"] = ours["local_basis.offset"]
    return config, ours


def build_model(config: E2FormerConfig, state_dict: dict[str, torch.Tensor], source: str = "") -> E2FormerLSR:
    """A network with ``state_dict`` loaded strictly, or a CheckpointError naming the keys."""
    model = E2FormerLSR(config)
    own = model.state_dict()
    state_dict = dict(state_dict)
    state_dict.setdefault("reference_energies", own["reference_energies"])
    state_dict.setdefault("supported", own["supported"])
    state_dict.setdefault("charge_embedding", own["charge_embedding"])
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {source} does not fit the network: missing keys {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
        )
    for key, value in state_dict.items():
        if own[key].shape != value.shape:
            raise CheckpointError(
                f"checkpoint {source}: {key} has shape {tuple(value.shape)}, the network expects "
                f"{tuple(own[key].shape)}"
            )
    model.load_state_dict(state_dict)
    return model


def save_checkpoint(model: E2FormerLSR, path: str, metadata: dict | None = None) -> None:
    """Write our checkpoint format atomically (a partial file never replaces a good one)."""
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _read(path: str):
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is corrupt or not a torch file ({exc})"
        ) from exc


def load_checkpoint(path: str, head: str | None = None, **config_overrides) -> tuple[E2FormerLSR, dict]:
    """Load our checkpoint or an authors' one; returns (model in eval mode, metadata)."""
    payload = _read(path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        config = E2FormerConfig.from_dict({**payload["config"], **config_overrides})
        model = build_model(config, payload["state_dict"], path)
        metadata = dict(payload.get("metadata", {}))
    elif isinstance(payload, dict):
        state = payload.get("model", payload.get("module", payload))
        if not isinstance(state, dict) or not any(str(k).startswith("decoder.") for k in state):
            raise CheckpointError(f"{path} is neither an openmmml-e2former nor an E2Former-LSR checkpoint")
        config, ours = convert_reference_state_dict(state, head, **config_overrides)
        model = build_model(config, ours, path)
        metadata = {"source": "IQuestLab/UBio-MolFM E2Former-LSR", "head": head or reference_heads(state)[0]}
    else:
        raise CheckpointError(f"{path} does not hold a checkpoint dict")
    return model.eval(), metadata


def potentials_dir() -> str:
    """Folder of the shipped potentials (``potentials/`` of a clone or of the installed package)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "potentials"), os.path.join(os.path.dirname(here), "potentials")):
        if os.path.isdir(candidate):
            return candidate
    return os.path.join(here, "potentials")


def find_shipped_potential(name: str) -> str | None:
    """Path of the shipped checkpoint for a potential name, or None if none is shipped."""
    path = os.path.join(potentials_dir(), f"{name}.pt")
    return path if os.path.exists(path) else None

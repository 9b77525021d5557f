"""Load, save and convert E2Former-LSR weights.

Three inputs are understood by :func:`load_checkpoint`:

* our own checkpoint: a ``torch.save`` dict ``{"format": "openmmml-e2former", "version": 1,
  "config": {...}, "state_dict": {...}, "metadata": {...}}``;
* an authors' (IQuestLab/UBio-MolFM, tag ``E2Former-LSR``) training checkpoint: a dict with
  the network under ``"model"`` (or ``"module"``) next to ``"optimizer"``, ``"lr_scheduler"``
  and bookkeeping, which are ignored (scalars are kept in the metadata);
* a bare authors' state dict (keys ``decoder.*`` and
  ``molfm_finetune_head.energy_heads.<name>.*``; ``module.``/``_orig_mod.`` prefixes of
  DDP/compiled models are removed).

Hyperparameters of an authors' checkpoint are inferred from tensor shapes and the keys are
renamed (:func:`convert_reference_state_dict`); parameters the authors' forward pass never
reads are dropped. Units: the released recipe (``loss_unit=kcal/mol``) predicts kcal/mol,
relative to per-element reference energies of the training set; the network keeps that unit
(``config.energy_unit``) and ``export.py`` converts it to kJ/mol once, at the OpenMM boundary.
Where a head's per-element references are known (:data:`REFERENCE_ENERGIES_KCAL`),
``reference_energies=True`` adds them so energies become absolute.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import zipfile

import torch

from .model import E2FormerConfig, E2FormerLSR

FORMAT = "openmmml-e2former"
FORMAT_VERSION = 1
AUTHORS_SOURCE = "IQuestLab/UBio-MolFM, tag E2Former-LSR"
# Where a training checkpoint keeps the network (the authors' engine saves "model").
_STATE_KEYS = ("model", "module", "state_dict", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.")
# The authors' ``loss_unit`` values -> the unit their network then predicts.
_LOSS_UNITS = {"kcal/mol": "kcal/mol", "ev": "eV", "kj/mol": "kJ/mol"}
#: Energy unit of an authors' checkpoint that does not record its ``loss_unit``: the
#: released training script (scripts/train_e2former.sh) sets ``loss_unit=kcal/mol``.
RELEASED_RECIPE_UNIT = "kcal/mol"

#: Per-element reference energies (kcal/mol, by atomic number) that the authors' data
#: pipeline subtracts from the training energies, by energy-head / dataset name. Source:
#: ``dataset_profile`` in src/molfm/data/utils.py of IQuestLab/UBio-MolFM at tag
#: E2Former-LSR (commit 22a7d5f28241e739e3d497c6466c625da9b67576); elements not listed
#: have reference 0 there. The network predicts E - sum_i ref[Z_i].
REFERENCE_ENERGIES_KCAL = {
    "deshaw_di_mol": {
        1: -376.562592,
        6: -23895.0918,
        7: -34311.7773,
        8: -47134.4609,
        9: -62596.1328,
        14: -181588.5,
        15: -214254.891,
        16: -249777.75,
        17: -288669.344,
        32: -1303393.75,
        33: -1402771.75,
        35: -1615132.62,
        50: -134498.875,
        52: -168191.625,
        53: -186824.922,
        85: -120958.859,
    }
}

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
# Reference key prefix -> our key prefix, for keys outside the blocks.
_SIMPLE = {
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


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not fit the network."""


def _rename(key: str) -> str | None:
    """Our name for one reference key (without the head prefix), or None if unused."""
    if _UNUSED.search(key):
        return None
    for old, new in _SIMPLE.items():
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


def reference_key_name(key: str, head: str = "<head>") -> str:
    """The authors' name for one of our parameter names (used in error messages)."""
    if key.startswith("energy_head."):
        return f"molfm_finetune_head.energy_heads.{head}." + key[len("energy_head.") :]
    if key.endswith("attention.basis.offset"):  # copies of the shared basis offsets
        return _REF + ("rbf.offset" if key.startswith("local") else "rbf_cluster.offset")
    for old, new in _SIMPLE.items():
        if key.startswith(new):
            return old + key[len(new) :]
    m = re.match(r"edge_degree\.radial\.(\d+)\.(.*)", key)
    if m:
        return f"{_REF}edge_deg_embed_dense.gbf_projs.{m.group(1)}.net.{m.group(2)}"
    m = re.match(r"local_blocks\.(\d+)\.(.*)", key)
    if m:
        local = [
            ("norm_attention.", "norm_1."),
            ("norm_ffn.", "norm_s3."),
            ("source_embedding.", "ga.source_embedding."),
        ]
        local += [(new, "ga." + old) for old, new in _ATTENTION]
        local += [(new, "ffn_s3." + old) for old, new in _FFN]
        return _unrename(f"{_REF}blocks.{m.group(1)}.", m.group(2), local, key)
    m = re.match(r"long_blocks\.(\d+)\.(.*)", key)
    if m:
        i = m.group(1)
        long = [("norm_ffn.", f"norm_ffn.{i}.0.")]
        long += [(new, f"norm_ffn.{i}.1." + old) for old, new in _FFN]
        long += [(new, f"cluster_blocks.{i}." + old) for old, new in _ATTENTION]
        return _unrename(_REF, m.group(2), long, key)
    return key


def _unrename(prefix: str, rest: str, table: list[tuple[str, str]], key: str) -> str:
    for new, old in table:
        if rest.startswith(new):
            return prefix + old + rest[len(new) :]
    return key


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
        energy_unit=RELEASED_RECIPE_UNIT,
    )
    values.update(overrides)
    return E2FormerConfig(**values)


def convert_reference_state_dict(
    state_dict: dict[str, torch.Tensor], head: str | None = None, **config_overrides
) -> tuple[E2FormerConfig, dict[str, torch.Tensor]]:
    """Rename an authors' state dict to ours; returns (config, our state dict).

    ``head`` picks the energy head when the checkpoint has several; an unknown name or
    several heads without a choice give a CheckpointError listing the available names.
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


def build_model(
    config: E2FormerConfig,
    state_dict: dict[str, torch.Tensor],
    source: str = "",
    describe=None,
) -> E2FormerLSR:
    """A network with ``state_dict`` loaded strictly, or a CheckpointError naming the keys.

    ``describe`` maps one of our key names to the name shown in the error (for an authors'
    checkpoint: the authors' key name).
    """
    describe = describe or (lambda key: key)
    model = E2FormerLSR(config)
    own = model.state_dict()
    state_dict = dict(state_dict)
    state_dict.setdefault("reference_energies", own["reference_energies"])
    state_dict.setdefault("supported", own["supported"])
    state_dict.setdefault("charge_embedding", own["charge_embedding"])
    missing = [describe(k) for k in sorted(set(own) - set(state_dict))]
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {source} does not fit the network: missing keys {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
        )
    for key, value in state_dict.items():
        if own[key].shape != value.shape:
            raise CheckpointError(
                f"checkpoint {source}: {describe(key)} has shape {tuple(value.shape)}, the network "
                f"expects {tuple(own[key].shape)}"
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
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# --------------------------------------------------------------------------- #
# Reading files
# --------------------------------------------------------------------------- #


class _Stand_in:  # noqa: N801
    """Replaces a pickled class whose package is not installed (e.g. the authors' config
    objects stored next to the weights); keeps the pickled state for inspection."""

    def __init__(self, *args, **kwargs):
        self.__dict__["_args"] = args

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"_state": state})


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Stand_in,), {"__module__": module})


class _TolerantPickle:
    """``pickle_module`` for torch.load that survives classes of packages not installed."""

    Unpickler = _TolerantUnpickler
    load = staticmethod(lambda file, **kw: _TolerantUnpickler(file, **kw).load())
    __name__ = "openmmml_e2former_tolerant_pickle"


def read_checkpoint_file(path: str):
    """``torch.load`` a checkpoint on the CPU, or a CheckpointError saying what is wrong.

    Tries ``weights_only=True`` first; training checkpoints that pickle other objects
    (configs, numpy scalars) are then read with a tolerant unpickler. Only open files from
    sources you trust: unpickling can run code.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        from .weights import WeightsNotFoundError

        raise WeightsNotFoundError(f"checkpoint file not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    _check_not_truncated(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # holds more than tensors and containers
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_TolerantPickle)
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def _check_not_truncated(path: str) -> None:
    """A zip-format torch file whose central directory is missing was cut short."""
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): an interrupted download or copy?")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"checkpoint {path} is truncated ({size} bytes; the end of its zip archive is missing): "
            "an interrupted download or copy? Download or copy it again."
        )


def _unreadable(path: str, exc: Exception) -> CheckpointError:
    if isinstance(exc, EOFError) or "truncat" in str(exc).lower():
        return CheckpointError(f"checkpoint {path} is truncated ({exc}); download or copy it again")
    return CheckpointError(f"cannot read checkpoint {path}: it is corrupt or not a torch file ({exc})")


def file_sha256(path: str) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- #
# The authors' training checkpoints
# --------------------------------------------------------------------------- #


def _is_reference_state(obj) -> bool:
    return isinstance(obj, dict) and any(isinstance(k, str) and k.startswith("decoder.") for k in obj)


def _strip_prefixes(state: dict) -> dict:
    """Remove the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) key prefixes."""
    for prefix in _PREFIXES:
        if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def find_reference_state_dict(payload, source: str = "") -> dict[str, torch.Tensor]:
    """The authors' state dict in a loaded file: the file itself, or under "model"/"module"."""
    if isinstance(payload, dict):
        candidates = [payload] + [payload.get(k) for k in _STATE_KEYS if isinstance(payload.get(k), dict)]
        for candidate in candidates:
            state = _strip_prefixes(dict(candidate))
            if _is_reference_state(state):
                return state
    raise CheckpointError(
        f"{source} is neither an openmmml-e2former checkpoint nor an E2Former-LSR checkpoint "
        f"(no decoder.* keys at the top level or under {list(_STATE_KEYS)})"
    )


def training_energy_unit(payload) -> tuple[str, str]:
    """(energy unit, where that was read) of an authors' checkpoint.

    The ``loss_unit`` of a training run is looked for at the top level of the file and in
    ``args``/``config``/``cfg``; without it, the released recipe's kcal/mol is assumed.
    """
    loss_unit = _find_loss_unit(payload)
    if loss_unit is None:
        return RELEASED_RECIPE_UNIT, "assumed: the released training recipe uses loss_unit=kcal/mol"
    unit = _LOSS_UNITS.get(str(loss_unit).lower())
    if unit is None:
        raise CheckpointError(
            f"the checkpoint was trained with loss_unit={loss_unit!r}, whose energy unit this package "
            f"does not know; pass energy_unit= (one of {list(_LOSS_UNITS.values())}) to load it"
        )
    return unit, f"loss_unit={loss_unit} recorded in the checkpoint"


def _find_loss_unit(payload):
    if not isinstance(payload, dict):
        return None
    for holder in (payload, payload.get("args"), payload.get("config"), payload.get("cfg")):
        if isinstance(holder, dict) and isinstance(holder.get("loss_unit"), str):
            return holder["loss_unit"]
        value = getattr(holder, "loss_unit", None) if holder is not None else None
        if isinstance(value, str):
            return value
    return None


def _training_state(payload) -> dict:
    """Scalar bookkeeping of a training checkpoint (epoch, step, ...), for the metadata."""
    if not isinstance(payload, dict):
        return {}
    return {
        str(k): v
        for k, v in payload.items()
        if isinstance(v, (bool, int, float, str)) and k not in ("format", "version")
    }


def _load_reference(payload, path: str, head: str | None, overrides: dict):
    state = find_reference_state_dict(payload, path)
    unit, unit_origin = (overrides["energy_unit"], "given") if "energy_unit" in overrides else (None, "")
    if unit is None:
        unit, unit_origin = training_energy_unit(payload)
    config, ours = convert_reference_state_dict(state, head, **{**overrides, "energy_unit": unit})
    heads = reference_heads(state)
    chosen = head or heads[0]
    model = build_model(config, ours, path, describe=lambda key: reference_key_name(key, chosen))
    metadata = {
        "source": AUTHORS_SOURCE,
        "source_file": os.path.basename(path),
        "head": chosen,
        "available_heads": heads,
        "energy_unit": unit,
        "energy_unit_origin": unit_origin,
        "training_state": _training_state(payload),
    }
    metadata.update(_reference_metadata(False, chosen, unit))
    return model, metadata


# --------------------------------------------------------------------------- #
# Units and per-element references
# --------------------------------------------------------------------------- #


def _reference_metadata(included: bool, head: str | None, unit: str) -> dict:
    known = head in REFERENCE_ENERGIES_KCAL
    if included:
        note = (
            f"absolute: the per-element reference energies of {head!r} (from the authors' data "
            "pipeline) are added to the network output"
        )
    else:
        note = (
            "relative: the network predicts E - sum_i ref[Z_i] (per-element reference energies of "
            "its training data); absolute energies are shifted by a constant per element, which "
            "changes no force and no MD"
            + (f"; the references of {head!r} are known (reference_energies=True adds them)" if known else "")
        )
    return {
        "energy_unit": unit,
        "force_unit": f"{unit}/Angstrom",
        "length_unit": "Angstrom",
        "energy_reference": "absolute" if included else "relative",
        "energy_reference_note": note,
        "reference_energies_known": known,
    }


def add_reference_energies(model: E2FormerLSR, head: str) -> dict[int, float]:
    """Put the per-element reference energies of ``head`` into the model (in its energy unit).

    Returns {atomic number: reference in the model's unit}. Elements without a reference in
    the authors' table keep 0.
    """
    from .units import KJ_PER_MOL

    if head not in REFERENCE_ENERGIES_KCAL:
        raise CheckpointError(
            f"no per-element reference energies are known for energy head {head!r}; known for: "
            f"{sorted(REFERENCE_ENERGIES_KCAL)}. Energies stay relative (forces are unaffected)."
        )
    scale = KJ_PER_MOL["kcal/mol"] / KJ_PER_MOL[model.config.energy_unit]
    values = {z: v * scale for z, v in REFERENCE_ENERGIES_KCAL[head].items()}
    with torch.no_grad():
        model.reference_energies.zero_()
        for z, value in values.items():
            model.reference_energies[z] = value
    return values


# --------------------------------------------------------------------------- #
# Entry points
# --------------------------------------------------------------------------- #


def load_checkpoint(
    path: str, head: str | None = None, reference_energies: bool = False, **config_overrides
) -> tuple[E2FormerLSR, dict]:
    """Load our checkpoint or an authors' one; returns (model in eval mode, metadata).

    ``head`` picks the energy head of an authors' checkpoint with several (error listing
    them otherwise); ``reference_energies=True`` adds the head's known per-element reference
    energies (absolute energies; forces unchanged). The metadata states ``energy_unit``,
    ``force_unit``, ``length_unit`` and ``energy_reference`` ("relative"/"absolute").
    """
    path = os.fspath(path)
    payload = read_checkpoint_file(path)
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        model, metadata = _load_ours(payload, path, head, config_overrides)
    else:
        model, metadata = _load_reference(payload, path, head, config_overrides)
    if reference_energies and metadata.get("energy_reference") != "absolute":
        add_reference_energies(model, metadata.get("head"))
        metadata.update(_reference_metadata(True, metadata.get("head"), model.config.energy_unit))
    return model.eval(), metadata


def _load_ours(payload, path: str, head: str | None, overrides: dict):
    version = payload.get("version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {version}; this package reads {FORMAT_VERSION}")
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path} is an openmmml-e2former checkpoint without its {key!r} entry")
    try:
        config = E2FormerConfig.from_dict({**payload["config"], **overrides})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid configuration ({exc})") from exc
    model = build_model(config, payload["state_dict"], path)
    metadata = dict(payload.get("metadata", {}))
    own_head = metadata.get("head")
    if head is not None and own_head is not None and head != own_head:
        raise CheckpointError(f"{path} holds only the energy head {own_head!r}, not {head!r}")
    metadata.setdefault("energy_unit", config.energy_unit)
    metadata.setdefault("force_unit", f"{config.energy_unit}/Angstrom")
    metadata.setdefault("length_unit", "Angstrom")
    return model, metadata


def convert_checkpoint(
    source: str,
    output: str,
    head: str | None = None,
    reference_energies: bool = False,
    **config_overrides,
) -> dict:
    """Convert an authors' (or our) checkpoint to our deployable format; returns its metadata.

    The output is written atomically and never replaces the input file.
    """
    if os.path.exists(output) and os.path.samefile(source, output):
        raise ValueError(f"the output {output} is the input checkpoint itself; choose another name")
    model, metadata = load_checkpoint(source, head, reference_energies, **config_overrides)
    metadata = {**metadata, "source_sha256": file_sha256(source)}
    save_checkpoint(model, output, metadata)
    return metadata


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

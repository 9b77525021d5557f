"""Load labelled datasets for training and split them by molecule."""

from __future__ import annotations

import json
import os
import warnings

from ..data.extxyz import read_structures
from ..data.splits import check_split, group_key, split_by_molecule
from .batching import Sample, to_sample


def load_samples(paths: list[str], max_atoms: int | None = None, dtype=None) -> tuple[list[Sample], dict]:
    """Samples of every labelled structure in ``paths`` and a summary (counts, methods, elements)."""
    import torch

    structures, origin = [], {}
    for path in paths:
        for structure in read_structures(path):
            structures.append(structure)
            origin[structure.id] = path
    unlabelled = [s.id for s in structures if not s.labelled]
    if unlabelled:
        raise ValueError(f"{len(unlabelled)} structure(s) have no labels, e.g. {unlabelled[:3]}")
    if max_atoms:
        structures = [s for s in structures if s.num_atoms <= max_atoms]
    if not structures:
        raise ValueError(f"no structures in {paths}")
    ids = [s.id for s in structures]
    if len(set(ids)) != len(ids):
        raise ValueError("structure ids repeat across the dataset files")
    methods = sorted({s.labels.get("method", "?") for s in structures})
    samples = [to_sample(s, group_key(s), dtype or torch.float32) for s in structures]
    summary = {
        "structures": len(structures),
        "methods": methods,
        "structure_list": structures,
        "origin": origin,
    }
    return samples, summary


def make_split(
    samples: list[Sample], structures, data_config: dict, output: str, write: bool = True
) -> dict[str, list[Sample]]:
    """Split (or reuse ``output/splits.json``, or ``data.split_file``); writes ``output/splits.json``
    when ``write`` (only one process of a distributed run writes; the split is deterministic)."""
    path = os.path.join(output, "splits.json")
    source = data_config.get("split_file") or (path if os.path.exists(path) else None)
    if source:
        with open(source) as handle:
            ids = json.load(handle)
        straddling = check_split(ids, structures, source)
        if straddling:
            warnings.warn(
                f"split {source} puts conformers of {len(straddling)} molecule(s) on more than one side, "
                f"e.g. {straddling[:3]}: test errors will flatter the model",
                stacklevel=2,
            )
    else:
        ids = split_by_molecule(structures, tuple(data_config["split"]), data_config["split_seed"])
    if write and not os.path.exists(path):
        os.makedirs(output, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(ids, handle)
        os.replace(tmp, path)
    by_id = {s.id: s for s in samples}
    missing = [i for side in ids.values() for i in side if i not in by_id]
    if missing:
        raise ValueError(f"split lists {len(missing)} id(s) not in the dataset, e.g. {missing[:3]}")
    return {side: [by_id[i] for i in ids.get(side, [])] for side in ("train", "val", "test")}


def training_pool(train: list[Sample], origin: dict[str, str], repeat: dict[str, int]) -> list[Sample]:
    """The training samples an epoch draws from: those read from a path in ``repeat`` appear
    ``repeat[path]`` times (oversampling a small but important dataset), the rest once."""
    return [s for s in train for _ in range(repeat.get(origin.get(s.id, ""), 1))]


def idle_repeats(train: list[Sample], origin: dict[str, str], repeat: dict[str, int]) -> list[str]:
    """Paths in ``repeat`` none of whose structures landed in the training split: repeating
    them changes nothing, which the user should hear about."""
    used = {origin.get(s.id) for s in train}
    return [path for path in repeat if path not in used]

"""Train/validation/test splits that keep every conformer of one molecule on the same side."""

from __future__ import annotations

import re

import numpy as np

from .structure import Structure


def group_key(structure: Structure) -> str:
    """The unit a split may not cut: the molecule name without a ``+water`` suffix (a peptide and
    its solvated conformers stay together); windows of a protein (``{protein}:{first}-{last}``)
    are grouped in blocks of 8 start residues so that most overlapping windows stay on one side."""
    name = structure.molecule.removesuffix("+water")  # not split("+"): NH3+-X-Y-COO- has a "+" too
    m = re.fullmatch(r"(.+):(\d+)-(\d+)", name)
    if m:
        return f"{m.group(1)}:block{(int(m.group(2)) - 1) // 8}"
    return name


def split_by_molecule(
    structures: list[Structure], fractions=(0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list[str]]:
    """``{"train": ids, "val": ids, "test": ids}``: groups (see :func:`group_key`) shuffled with
    ``seed`` and assigned greedily so each side gets about its fraction of the structures.

    A validation/test group holding an element that no training structure has is moved to the
    training side (its per-element reference energy could not be fitted otherwise)."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, not {fractions}")
    groups: dict[str, list[str]] = {}
    for s in structures:
        groups.setdefault(group_key(s), []).append(s.id)
    names = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(names))
    total = len(structures)
    targets = {"val": fractions[1] * total, "test": fractions[2] * total}
    elements = {}
    for s in structures:
        elements.setdefault(group_key(s), set()).update(int(z) for z in s.numbers)
    sides: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    counts = {"train": 0, "val": 0, "test": 0}
    for i in order:
        name = names[i]
        side = next((k for k in ("test", "val") if counts[k] + len(groups[name]) / 2 <= targets[k]), "train")
        sides[side].append(name)
        counts[side] += len(groups[name])
    trained = set().union(*(elements[g] for g in sides["train"])) if sides["train"] else set()
    for side in ("val", "test"):
        for name in list(sides[side]):
            if not elements[name] <= trained:
                sides[side].remove(name)
                sides["train"].append(name)
                trained |= elements[name]
    return {side: [i for name in names_ for i in groups[name]] for side, names_ in sides.items()}


def check_split(split: dict[str, list[str]], structures: list[Structure], source: str) -> list[str]:
    """Refuse a split (read from ``source``) that puts an id on two sides or leaves a structure of
    the dataset on none (it would silently not be used: the usual slip when a file is added to
    ``data.paths`` but not to the split). Returns the molecule groups (:func:`group_key`) found on
    more than one side, which a hand-made split may want but which leak conformers into the test."""
    side_of: dict[str, str] = {}
    for side, ids in split.items():
        if side not in ("train", "val", "test"):
            raise ValueError(f"split {source}: unknown side {side!r} (use train, val, test)")
        for i in ids:
            if i in side_of:
                raise ValueError(f"split {source}: structure {i!r} is on both {side_of[i]!r} and {side!r}")
            side_of[i] = side
    unassigned = [s.id for s in structures if s.id not in side_of]
    if unassigned:
        raise ValueError(
            f"split {source} puts {len(unassigned)} structure(s) of the dataset on no side, e.g. "
            f"{unassigned[:3]}: add them (scripts/active_learning_merge.py puts each on its molecule's "
            "side) or drop the split file to split afresh"
        )
    sides: dict[str, set] = {}
    for s in structures:
        sides.setdefault(group_key(s), set()).add(side_of[s.id])
    return sorted(g for g, found in sides.items() if len(found) > 1)


def extend_split(split: dict[str, list[str]], structures: list[Structure], new: list[Structure]) -> dict:
    """Sides for ``new`` structures added to a dataset already split as ``split`` (ids of
    ``structures``): each joins the side of its group (:func:`group_key`), so a fine-tuning run on
    the extended data keeps the old test molecules unseen. Groups ``split`` has never seen go to
    training. Returns ``{"train": [...], "val": [...], "test": [...]}`` lists of the new structures."""
    side_of_id = {i: side for side, ids in split.items() for i in ids}
    side_of_group = {}
    for s in structures:
        if s.id in side_of_id:
            side_of_group.setdefault(group_key(s), side_of_id[s.id])
    known = set(side_of_id)
    ids = [s.id for s in new]
    if len(set(ids)) != len(ids):
        raise ValueError("the new structures repeat ids (the same part given twice?)")
    repeated = [s.id for s in new if s.id in known]
    if repeated:
        raise ValueError(f"{len(repeated)} new structure id(s) are already in the split, e.g. {repeated[:3]}")
    out: dict[str, list[Structure]] = {"train": [], "val": [], "test": []}
    for s in new:
        out[side_of_group.get(group_key(s), "train")].append(s)
    return out

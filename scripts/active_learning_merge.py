"""Add active-learning structures to the training data without moving any molecule across the split.

Usage::

    python scripts/active_learning_merge.py LABELLED_PART [LABELLED_PART ...] \\
        [--base datasets/gfn2-peptides.extxyz.gz [MORE ...]] [--base-split SPLITS_JSON] \\
        --train-out datasets/gfn2-active1.extxyz.gz --heldout-out datasets/gfn2-active1-heldout.extxyz.gz \\
        --split-out configs/splits-active1.json [--max-force 50] [--heldout-parts PART ...]

Without ``--base-split`` the base split is recomputed (``split_by_molecule``, fractions 0.8/0.1/0.1,
seed ``--split-seed`` 0: the split of ``configs/e2former-lsr.yaml``; checked equal to the stage-1
run's ``splits.json``).

Each new structure joins the side of its molecule in the base split (``extend_split``). Those on the
training side go to ``--train-out``; those of validation/test molecules go to ``--heldout-out``
(never trained on, so the old test split stays unseen: they measure how well a potential predicts
configurations an ML run visited), with the whole of any ``--heldout-parts`` (new molecules kept out
of training). ``--split-out`` is the base split with the new training ids
added, for ``data.split_file`` of a fine-tuning config.
"""

from __future__ import annotations

import argparse
import json
import os

from openmmml_e2former.data.extxyz import read_structures, write_structures
from openmmml_e2former.data.splits import extend_split, group_key, split_by_molecule


def _labelled(parts: list[str], max_force: float | None, what: str) -> list:
    structures = [s for part in parts for s in read_structures(part) if s.labelled]
    if max_force is None or not parts:
        return structures
    kept = [s for s in structures if float(abs(s.forces).max()) <= max_force]
    dropped = len(structures) - len(kept)
    print(f"{what}: dropped {dropped} structure(s) with a force component > {max_force} eV/Å")
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("parts", nargs="+", help="labelled part folders or files (*.extxyz[.gz])")
    parser.add_argument(
        "--base", nargs="+", default=["datasets/gfn2-peptides.extxyz.gz"], help="the data already split"
    )
    parser.add_argument(
        "--heldout-parts",
        nargs="+",
        default=[],
        help="labelled parts of molecules kept out of training altogether (new molecules held out to "
        "measure the new data's chemistry); none of their molecules may appear in PARTS",
    )
    parser.add_argument("--base-split", default=None, help="splits.json of the base run (default: recompute)")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--train-out", required=True)
    parser.add_argument("--heldout-out", required=True)
    parser.add_argument("--split-out", required=True)
    parser.add_argument(
        "--max-force",
        type=float,
        default=None,
        help="drop structures with a force component above this (eV/Å): a few far-off frames of a "
        "broken ML run would otherwise dominate a squared-error loss",
    )
    args = parser.parse_args()
    base = [s for path in args.base for s in read_structures(path)]
    if args.base_split:
        with open(args.base_split) as handle:
            split = json.load(handle)
    else:
        split = split_by_molecule(base, (0.8, 0.1, 0.1), args.split_seed)
    new = _labelled(args.parts, args.max_force, "new parts")
    held = _labelled(args.heldout_parts, args.max_force, "held-out parts")
    shared = {group_key(s) for s in held} & {group_key(s) for s in new + base}
    if shared:
        raise SystemExit(
            f"held-out parts share split groups with the new or base data: {sorted(shared)[:5]} "
            "(nothing written)"
        )
    sides = extend_split(split, base, new)
    for path in (args.train_out, args.heldout_out, args.split_out):
        if os.path.exists(path):
            raise SystemExit(f"{path} exists; remove it first (nothing was written)")
    write_structures(args.train_out, sides["train"])
    write_structures(args.heldout_out, sides["val"] + sides["test"] + held)
    extended = {**split, "train": split["train"] + [s.id for s in sides["train"]]}
    with open(args.split_out, "w") as handle:
        json.dump(extended, handle)
    print(json.dumps({**{k: len(v) for k, v in sides.items()}, "held-out parts": len(held)}))


if __name__ == "__main__":
    main()

"""`e2former eval`'s XYZ reader on the project's own datasets keeps their fragments (it used to
miss the `fragment_id` key and silently re-fragment every molecule with BRICS)."""

from __future__ import annotations

import os

import numpy as np

from openmmml_e2former.cli_checkpoints import read_extxyz
from openmmml_e2former.data.extxyz import read_structures
from openmmml_e2former.fragments import normalize_fragment_ids

DATASET = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets", "gfn2-villin-halves.extxyz.gz"
)


def test_eval_reader_keeps_the_datasets_fragments():
    ours = read_structures(DATASET)[:5]
    read = read_extxyz(DATASET)[:5]
    assert any(len(set(s.fragment_ids)) > 1 for s in ours)  # several fragments to get right
    for s, r in zip(ours, read, strict=True):
        np.testing.assert_array_equal(r["atomic_numbers"], s.numbers)
        np.testing.assert_array_equal(r["fragment_ids"], normalize_fragment_ids(s.fragment_ids))
        assert r["charge"] == s.charge

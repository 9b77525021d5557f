"""Write ``tiny-dipeptides.extxyz.gz``: the training tests' data set (tests/test_training.py).

GFN2-xTB-labelled (tblite) conformers of five capped dipeptides (ACE-X-NME, X = GLY, ALA, SER,
LYS, ASP: charges 0, 0, 0, +1, -1) from OBC2 MD at 400 K, 8 each. The tests once made it on every
run; a frozen copy lets them (and the `gpu` training test on a lent machine) run without tblite.

    python tests/data/make_tiny_dataset.py      # from the repository root
"""

from __future__ import annotations

import os

from openmmml_e2former.data.extxyz import write_structures
from openmmml_e2former.data.generators import capped_peptides
from openmmml_e2former.data.labellers import XTBLabeller

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-dipeptides.extxyz.gz")


def main() -> None:
    labeller = XTBLabeller()
    names = [["GLY"], ["ALA"], ["SER"], ["LYS"], ["ASP"]]
    structures = capped_peptides(names, (400.0,), 8, interval=100, progress=False)
    write_structures(OUT, [labeller.apply(s) for s in structures])
    print(f"wrote {OUT}: {len(structures)} structures")


if __name__ == "__main__":
    main()

"""Copy what ``scripts/make_dataset.py`` reads from the MD run records in ``stability/`` (30 MB) into
``datasets/sources/``, so that the dataset can be rebuilt without the records.

Run once from the repository root: ``python scripts/extract_dataset_sources.py``. The output is
committed; ``datasets/sources/PROVENANCE.md`` (written here) says where each file came from.

The dataset builder reads, through ``openmmml_e2former.data.exploration.run_folder_frames``, only a
run folder's ``prepared.pdb`` (its topology: the protein's residues, atoms and bonds) and the
trajectory of its last MD stage, every saved frame, protein atoms only (made whole across the
periodic box). Each source is such a run folder, cut down to exactly that: ``prepared.pdb`` with
the waters and ions deleted (rewritten by OpenMM's ``PDBFile``, ids kept) and
``stages/<last stage>/trajectory.dcd`` with every saved frame and the box, the protein atoms'
coordinates copied byte for byte from OpenMM's DCD file. The folders keep the run folders' names,
so the ids and sources of the structures made from them are those made from ``stability/``. The
cutting code is ``tests/data/make_run_fixtures.py``'s, which cuts the tests' run folders likewise.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import openmm.app as app

from openmmml_e2former.checkpoints import file_sha256
from openmmml_e2former.chemistry import is_water_or_ion

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "data"))
from make_run_fixtures import kept_atoms, subset_dcd, write_pdb  # noqa: E402
from stability_records import unpack_for  # noqa: E402

RECORDS = os.path.join(ROOT, "stability")
OUT = os.path.join(ROOT, "datasets", "sources")
#: the run folders of ``stability/`` that ``scripts/make_dataset.py`` reads
RUNS = ["villin-20ps-stage1-run", "villin-20ps-al1-run", "villin-20ps-al2-run"]


def last_commit(path: str) -> str:
    """The last commit that changed ``path`` (short hash), or ``uncommitted``."""
    result = subprocess.run(
        ["git", "log", "-1", "--format=%h", "--", path], cwd=ROOT, capture_output=True, text=True
    )
    return result.stdout.strip() or "uncommitted"


def extract(run: str) -> list[str]:
    """Cut ``stability/<run>`` into ``datasets/sources/<run>``; the PROVENANCE.md rows of its files."""
    source = os.path.join(RECORDS, run)
    # the stage run_folder_frames reads: the last one in sorted order
    stage = os.path.basename(sorted(glob.glob(os.path.join(source, "stages", "*")))[-1])
    pdb = os.path.join(source, "prepared.pdb")
    topology = app.PDBFile(pdb).topology
    keep = kept_atoms(topology, waters=0, ions=0)
    # exactly the atoms run_folder_frames keeps
    assert keep == [a.index for a in topology.atoms() if not is_water_or_ion(a.residue.name)]
    dcd = os.path.join("stages", stage, "trajectory.dcd")
    target = os.path.join(OUT, run)
    os.makedirs(os.path.join(target, "stages", stage), exist_ok=True)
    write_pdb(pdb, os.path.join(target, "prepared.pdb"), keep)
    frames = subset_dcd(os.path.join(source, dcd), os.path.join(target, dcd), keep)
    origin = f"`stability/{run}` (commit {last_commit(source)})"
    deleted = topology.getNumAtoms() - len(keep)
    return [
        f"| `{run}/prepared.pdb` | `prepared.pdb` of {origin}, SHA-256 {file_sha256(pdb)[:12]}... "
        f"| the {len(keep)} protein atoms ({deleted} water and ion atoms deleted) |",
        f"| `{run}/{dcd}` | `{dcd}` of {origin}, SHA-256 {file_sha256(os.path.join(source, dcd))[:12]}... "
        f"| stage `{stage}`, all {frames} saved frames (0-{frames - 1}) and their boxes, the protein atoms |",
    ]


def main() -> None:
    for run in RUNS:
        unpack_for(os.path.join(ROOT, "stability", run))  # the run records keep their frames packed
    rows = [row for run in RUNS for row in extract(run)]
    text = [
        "# datasets/sources",
        "",
        "The inputs that `scripts/make_dataset.py` reads from MD runs (parts `villin-run`,",
        "`villin-env`, `villin-run-al1`, `villin-halves`, `villin-whole-heldout`), cut from the run",
        "records in `stability/` by `python scripts/extract_dataset_sources.py` (from the repository",
        "root; it rewrites this folder).",
        "Each folder is a run folder as `e2former run` writes it, cut down to what the dataset builder",
        "uses: the protein's topology and every saved frame of the last MD stage. Frames are copied byte",
        "for byte from OpenMM's DCD files (header kept but for the atom count), so the structures are the",
        "same as from the full records.",
        "",
        "| file | from | what |",
        "|---|---|---|",
        *rows,
        "",
    ]
    with open(os.path.join(OUT, "PROVENANCE.md"), "w") as handle:
        handle.write("\n".join(text))


if __name__ == "__main__":
    main()

"""Generate and label the GFN2-xTB training set of the shipped potential, part by part.

Usage: ``python scripts/make_dataset.py OUT_DIR [--parts a,b,...] [--workers N]``.
Each part is generated once into ``OUT_DIR/raw/<part>.extxyz.gz`` (skipped if present) and labelled
into ``OUT_DIR/labelled/<part>/`` (resumable: rerun the same command after an interruption).
A line of JSON per finished part is appended to ``OUT_DIR/log.jsonl`` (counts, CPU seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from openmmml_e2former.data import generators as g
from openmmml_e2former.data.exploration import explore_peptides, run_folder_environments, run_folder_windows
from openmmml_e2former.data.extxyz import read_structures, write_structures
from openmmml_e2former.data.labelling import label_dataset
from openmmml_e2former.data.peptides import STANDARD_RESIDUES, TERMINAL_VARIANTS, VARIANTS
from openmmml_e2former.data.pieces import protein_pieces_set, solvated_run_pieces

RESIDUES = STANDARD_RESIDUES + list(VARIANTS)

#: The run folders of the MD runs whose frames the villin-run parts are cut from: the records in
#: ``stability/`` cut to the protein and the last stage's saved frames, folder names kept, by
#: ``scripts/extract_dataset_sources.py``.
SOURCES = "datasets/sources"
STAGE1_RUN = os.path.join(SOURCES, "villin-20ps-stage1-run")
AL1_RUN = os.path.join(SOURCES, "villin-20ps-al1-run")
AL2_RUN = os.path.join(SOURCES, "villin-20ps-al2-run")
#: round 3's constrained-X-H run, read from its record in stability/ (water included)
HCONS_RUN = os.path.join("stability", "villin-20ps-hcons-run")
#: the classical (AMBER14, all-MM) 20 ps villin run in the same protocol, read from its record
MM_RUN = os.path.join("stability", "villin-20ps-mm-run")


def tripeptide_sequences(count: int, seed: int = 1, residues: list[str] = RESIDUES) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    seqs, seen = [], set()
    while len(seqs) < count:
        pair = tuple(str(r) for r in rng.choice(residues, 2))
        if pair not in seen:
            seen.add(pair)
            seqs.append(list(pair))
    return seqs


def explored_sequences() -> list[list[str]]:
    """The molecules of the ML-driven exploration: every capped dipeptide and the 40 tripeptides."""
    return [[r] for r in RESIDUES] + tripeptide_sequences(40)


#: The weights each exploration ran with (shipped at the time), so that a part can be regenerated
#: after a newer potential has shipped: ``git show COMMIT:openmmml_e2former/potentials/e2former-lsr.pt
#: > PATH`` (stage 1: SHA-256 b7489098..., round 1: eb8063ea...).
EXPLORER_WEIGHTS = {
    "stage 1": ("runs/e2former-lsr-stage1.pt", "02d3c25"),
    "round 1": ("runs/e2former-lsr-al1.pt", "072ce10"),
}


def explorer(which: str):
    """``MLPotential('e2former-lsr')`` with the weights of :data:`EXPLORER_WEIGHTS` ``[which]``."""
    from openmmml import MLPotential

    path, commit = EXPLORER_WEIGHTS[which]
    if not os.path.exists(path):
        raise SystemExit(
            f"{path} (the {which} weights) is missing: "
            f"git show {commit}:openmmml_e2former/potentials/e2former-lsr.pt > {path}"
        )
    return MLPotential("e2former-lsr", modelPath=path)


def mlmd_exploration(records_path: str) -> list:
    """Active learning (round 1): ML-driven MD (600 K, 1 fs, 20 frames 20 fs apart) of
    :func:`explored_sequences` with the stage-1 potential. One JSON line per molecule (steps,
    broken bonds) is appended to ``records_path``."""
    if os.path.exists(records_path):
        os.remove(records_path)  # a rerun after an interruption regenerates the part from scratch
    label = "shipped e2former-lsr"  # stage 1, shipped when the part was made
    potential = explorer("stage 1")
    # round 1 started from the builder's unminimised geometry (mm_minimize=False): see datasets/README.md
    return explore_peptides(explored_sequences(), potential, label, records_path, mm_minimize=False)[0]


#: Active learning round 2: peptides with free (charged) termini, the villin run's missing chemistry.
#: Villin's own terminal sequences come first; the held-out molecules share no sequence with them.
VILLIN_TERMINI = [["LEU", "SER", "ASP"], ["GLY", "LEU", "PHE"], ["LEU", "SER"], ["LEU", "PHE"]]


def zwitterion_sequences() -> tuple[list[list[str]], list[list[str]]]:
    """(training, held-out) sequences of peptides with free termini: villin's terminal ones and
    32 random dipeptides for training, 8 other random dipeptides held out."""
    pool = STANDARD_RESIDUES + list(TERMINAL_VARIANTS)
    pairs = [p for p in tripeptide_sequences(60, seed=2, residues=pool) if p not in VILLIN_TERMINI]
    return VILLIN_TERMINI + pairs[:32], pairs[32:40]


def zwitterion_exploration(records_path: str, sequences: list[list[str]]) -> list:
    """Active learning (round 2): ML-driven MD (600 K, 1 fs, 20 frames 20 fs apart) of zwitterions
    with the round-1 potential (shipped when the part was made), from AMBER14-relaxed starts;
    records as :func:`mlmd_exploration`."""
    if os.path.exists(records_path):
        os.remove(records_path)
    potential = explorer("round 1")
    return explore_peptides(sequences, potential, "shipped e2former-lsr", records_path, caps=False)[0]


def zwitterion_heldout(out: str) -> list:
    """The held-out zwitterions: classical conformers (300 and 600 K) and ML-driven MD frames."""
    held_out = zwitterion_sequences()[1]
    classical = g.capped_peptides(held_out, (300.0, 600.0), 5, seed=3000, caps=False)
    return classical + zwitterion_exploration(os.path.join(out, "raw", "zw-heldout-records.jsonl"), held_out)


def villin_run_environments() -> list:
    """Charged-group neighbourhoods in the frames of both failed villin runs."""
    return run_folder_environments(STAGE1_RUN) + run_folder_environments(AL1_RUN, tag="villin-20ps-run-al1")


PARTS = {
    "dipeptides": lambda out: g.capped_peptides([[r] for r in RESIDUES], (300.0, 500.0, 700.0), 20, seed=0),
    "clusters": lambda out: g.small_clusters(per_cluster=30, seed=0),
    "tripeptides": lambda out: g.capped_peptides(tripeptide_sequences(40), (300.0, 600.0), 10, seed=1000),
    "villin3": lambda out: g.villin_windows(window=3, num_frames=10, temperature=400.0, interval=500, seed=0),
    "solvated": lambda out: g.solvated_peptides([[r] for r in RESIDUES], num_frames=6, max_waters=10, seed=0),
    # active learning round 1 (see datasets/README.md): where the stage-1 potential's dynamics go
    "mlmd": lambda out: mlmd_exploration(os.path.join(out, "raw", "mlmd-records.jsonl")),
    # the failed stage-1 stability run, labelled while its folder was still named villin-20ps-run
    "villin-run": lambda out: run_folder_windows(STAGE1_RUN, window=3, tag="villin-20ps-run"),
    # active learning round 2 (see datasets/README.md): free termini and charged-group contacts
    "zwitterions": lambda out: g.capped_peptides(
        zwitterion_sequences()[0], (300.0, 600.0), 10, seed=2000, caps=False
    ),
    "zw-mlmd": lambda out: zwitterion_exploration(
        os.path.join(out, "raw", "zw-mlmd-records.jsonl"), zwitterion_sequences()[0][:24]
    ),
    "zw-heldout": zwitterion_heldout,
    "villin-env": lambda out: g.villin_environments() + villin_run_environments(),
    # the round-1 potential's stopped run (guard at 2.05 ps): its frames' 3-residue windows
    "villin-run-al1": lambda out: run_folder_windows(AL1_RUN, window=3, tag="villin-20ps-run-al1"),
    # round 3: halves of villin (residues 1-18 and 18-35, ~290 atoms) from the frames of the three
    # failed runs and from OBC2 MD, to teach the long-range blocks a context closer to a whole protein
    "villin-halves": lambda out: villin_run_halves(),
    "villin-md-halves": lambda out: g.villin_windows(
        window=18, stride=17, num_frames=40, temperature=350.0, interval=1000, seed=7, tag="obc2md350"
    ),
    # held out: the whole protein (582 atoms, ~9 CPU min each) just before each failed run's break
    "villin-whole-heldout": lambda out: villin_run_wholes(),
    # held out: the whole protein in equilibrium, frames at 5, 10, 15 and 20 ps of the AMBER14 run
    "villin-mm-whole-heldout": lambda out: villin_mm_wholes(),
    # held out: windows of a protein never trained on (HIV-1 integrase core, 1BHL)
    "integrase-heldout": lambda out: integrase_windows(out),
    # held out: charged pairs 3.5-10 Å apart (the contact clusters stop at 3.2 Å)
    "pairs-heldout": lambda out: g.separated_pairs(per_pair=12, seed=5),
    # round 4: 150-600-atom spheres and segments of four other proteins (docs: datasets/README.md)
    "protein-pieces": lambda out: protein_pieces_set(threads=1),
    # round 5: pieces of round 3's constrained-X-H villin run (the fold drifted) with their first
    # water shell: the potential's own configurations, in a solvent that screens their charges
    "villin-water-pieces": lambda out: villin_water_pieces(),
}


def villin_water_pieces() -> list:
    """Spheres and segments (target 120-330 protein atoms) with the waters within 3.5 Å of their
    kept residues, from every 4th saved frame (2-20 ps) of ``stability/villin-20ps-hcons-run``
    (unpacked from its archive). Made before the caps had their own shell: ``shell_around_caps``
    is off so the part stays the labelled one."""
    import stability_records

    stability_records.unpack(HCONS_RUN)
    frames = list(range(3, 40, 4))
    return solvated_run_pieces(
        HCONS_RUN, "villin-hcons", frames, spheres=2, segments=1, seed=5, shell_around_caps=False
    )


def integrase_windows(out: str) -> list:
    """3-residue windows (every 2nd start) of HIV-1 integrase's catalytic core, PDB 1BHL as shipped
    in pdbfixer's tests: prepared like a protocol run (CAS -> CYS, the missing loop 138-150 built,
    hydrogens at pH 7, no solvent), then relaxed by 200 steps of AMBER14/OBC2 minimisation. (MD
    frames were left out: OBC2 without a cutoff costs ~0.3 CPU s per step for its 2333 atoms.)"""
    import openmm.app as app
    import openmm.unit as unit
    import pdbfixer

    from openmmml_e2former.data.sampling import minimized
    from openmmml_e2former.simulate.prepare import prepare_structure
    from openmmml_e2former.simulate.protocol import PREPARE_DEFAULTS

    source = os.path.join(os.path.dirname(pdbfixer.__file__), "tests", "data", "1BHL.pdb")
    options = {**PREPARE_DEFAULTS, "solvate": False, "add_missing_residues": True}
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
    topology, positions, _ = prepare_structure(source, options, forcefield)
    angstrom = np.array(positions.value_in_unit(unit.angstrom))
    relaxed = minimized(topology, angstrom, solvent="obc2", iterations=200)
    fixed = os.path.join(out, "raw", "1bhl-prepared.pdb")
    with open(fixed, "w") as handle:
        app.PDBFile.writeFile(topology, relaxed * unit.angstrom, handle)
    return g.protein_windows(
        fixed, "1bhl", window=3, num_frames=1, stride=2, tag="min",
        label="HIV-1 integrase core (PDB 1BHL, pdbfixer tests, prepared and minimised)",
    )  # fmt: skip


#: (run folder, tag, frame) of the held-out whole-protein structures: the last saved frame before
#: the bond guard stopped the run (round 2, round 1) or before ARG14's HE moved onto CZ (stage 1).
WHOLE_FRAMES = [
    (AL2_RUN, "villin-20ps-run-al2", 1),
    (AL1_RUN, "villin-20ps-run-al1", 3),
    (STAGE1_RUN, "villin-20ps-stage1-run", 12),
]


def villin_run_wholes() -> list:
    """The whole villin protein in the frames of :data:`WHOLE_FRAMES`."""
    out = []
    for folder, tag, frame in WHOLE_FRAMES:
        wholes = run_folder_windows(folder, 35, tag=f"whole/{tag}", stride=35)
        out.append(wholes[frame])
    return out


def villin_mm_wholes(frames=(9, 19, 29, 39)) -> list:
    """The whole villin protein in saved frames of the classical run (:data:`MM_RUN`, a frame every
    0.5 ps): configurations no potential of ours has driven, unlike :func:`villin_run_wholes`."""
    import stability_records

    stability_records.unpack(MM_RUN)
    wholes = run_folder_windows(MM_RUN, 35, tag="whole/villin-20ps-mm-run", stride=35)
    if len(wholes) != 40:
        raise ValueError(f"{MM_RUN} holds {len(wholes)} frames, not the 40 (every 0.5 ps) assumed")
    return [wholes[f] for f in frames]


def villin_run_halves() -> list:
    """Residues 1-18 and 18-35 (H-capped) of every saved frame of the three failed villin runs."""
    runs = [
        (AL2_RUN, "villin-20ps-run-al2"),
        (AL1_RUN, "villin-20ps-run-al1"),
        (STAGE1_RUN, "villin-20ps-stage1-run"),
    ]
    return [s for folder, tag in runs for s in run_folder_windows(folder, 18, tag=f"halves/{tag}", stride=17)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--retry-failed", action="store_true")
    args = parser.parse_args()
    for part in args.parts.split(","):
        raw = os.path.join(args.out, "raw", f"{part}.extxyz")
        if not os.path.exists(raw):  # parts made before 2026-12-05 are plain text
            raw += ".gz"
        start = time.process_time()
        if not os.path.exists(raw):
            os.makedirs(os.path.dirname(raw), exist_ok=True)
            write_structures(raw, PARTS[part](args.out))
        generate_cpu = time.process_time() - start
        structures = read_structures(raw)
        summary = label_dataset(
            structures,
            os.path.join(args.out, "labelled", part),
            workers=args.workers,
            retry_failed=args.retry_failed,
        )
        summary.update(part=part, generate_cpu_seconds=round(generate_cpu, 1), time=time.ctime())
        with open(os.path.join(args.out, "log.jsonl"), "a") as handle:
            handle.write(json.dumps(summary) + "\n")
        print(summary, flush=True)


if __name__ == "__main__":
    main()

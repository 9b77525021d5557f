"""``e2former label generate|run|merge``: structures and their labels (GFN2-xTB, DFT)."""

from __future__ import annotations

KINDS = ("dipeptides", "peptides", "clusters", "pairs", "villin", "fragments", "solvated")


def add_parser(sub) -> None:
    label = sub.add_parser("label", help="generate structures and label them (GFN2-xTB, DFT)")
    lsub = label.add_subparsers(dest="label_command", required=True)

    gen = lsub.add_parser("generate", help="write unlabelled structures to an extxyz file")
    gen.add_argument("kind", choices=KINDS)
    gen.add_argument("-o", "--output", required=True, help="output .extxyz or .extxyz.gz")
    gen.add_argument("--sequences", default=None, help="peptides: comma-separated, residues joined by '-'")
    gen.add_argument("--frames", type=int, default=10, help="MD frames per temperature (or per molecule)")
    gen.add_argument("--temperatures", default="300,500", help="MD temperatures in K, comma-separated")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--pdb", default=None, help="fragments: the protein's PDB file (water/ions are dropped)")
    gen.add_argument("--window", type=int, default=3, help="fragments/villin: residues per window")
    gen.add_argument("--stride", type=int, default=1, help="fragments/villin: residues between window starts")
    gen.add_argument("--name", default=None, help="fragments: molecule name (default: the PDB file's stem)")
    gen.set_defaults(func=run_generate)

    run = lsub.add_parser("run", help="label structures into a folder of chunks (resumable)")
    run.add_argument("input", help="extxyz file (or folder) of structures")
    run.add_argument("-o", "--output", required=True, help="output folder of chunk-*.extxyz.gz")
    run.add_argument("--method", default="gfn2", help="gfn2 (default), gfn1, pyscf (DFT), hf")
    run.add_argument("--xc", default="pbe0", help="pyscf: exchange-correlation functional")
    run.add_argument("--basis", default="def2-svp", help="pyscf/hf: basis set")
    run.add_argument(
        "--gpu", default="auto", choices=["auto", "true", "false"],
        help="pyscf/hf: GPU4PySCF (auto: when installed and a CUDA device is present)",
    )  # fmt: skip
    run.add_argument(
        "--workers", type=int, default=1, help="labelling processes (more than 1: a local Dask cluster)"
    )
    run.add_argument("--address", default=None, help="label on a running Dask scheduler (tcp://host:8786)")
    run.add_argument("--chunk-size", type=int, default=100, help="structures per chunk file")
    run.add_argument("--retry-failed", action="store_true", help="label again the ids in failed.jsonl")
    run.set_defaults(func=run_label)

    merge = lsub.add_parser("merge", help="merge labelled chunks into one (compressed) dataset file")
    merge.add_argument("inputs", nargs="+", help="folders or files")
    merge.add_argument("-o", "--output", required=True, help="output .extxyz or .extxyz.gz")
    merge.set_defaults(func=run_merge)


def _sequences(text: str | None) -> list[list[str]]:
    if not text:
        raise ValueError("--sequences is required for this kind, e.g. ALA-GLY,LYS")
    return [s.split("-") for s in text.split(",") if s]


def run_generate(args) -> None:
    from ..data import generators as g
    from ..data.extxyz import write_structures
    from ..data.peptides import STANDARD_RESIDUES, VARIANTS

    temps = tuple(float(t) for t in args.temperatures.split(","))
    if args.kind == "dipeptides":
        out = g.capped_peptides(
            [[r] for r in STANDARD_RESIDUES + list(VARIANTS)], temps, args.frames, seed=args.seed
        )
    elif args.kind == "peptides":
        out = g.capped_peptides(_sequences(args.sequences), temps, args.frames, seed=args.seed)
    elif args.kind == "clusters":
        out = g.small_clusters(per_cluster=args.frames, seed=args.seed)
    elif args.kind == "pairs":
        out = g.separated_pairs(per_pair=args.frames, seed=args.seed)
    elif args.kind == "villin":
        out = g.villin_windows(
            args.window, args.frames, temperature=temps[-1], seed=args.seed, stride=args.stride
        )
    elif args.kind == "fragments":
        out = _fragments(args, temps[-1])
    else:
        seqs = _sequences(args.sequences) if args.sequences else [[r] for r in STANDARD_RESIDUES]
        out = g.solvated_peptides(seqs, num_frames=args.frames, seed=args.seed)
    write_structures(args.output, out)
    print(f"wrote {len(out)} structures to {args.output}")


def _fragments(args, temperature: float) -> list:
    import os

    from ..data.generators import protein_windows

    if not args.pdb:
        raise ValueError("fragments needs --pdb FILE (the protein to cut windows from)")
    name = args.name or os.path.splitext(os.path.basename(args.pdb))[0]
    return protein_windows(
        args.pdb, name, args.window, args.frames, temperature, seed=args.seed, stride=args.stride
    )


def run_label(args) -> None:
    from ..data.extxyz import read_structures
    from ..data.labelling import label_dataset

    options = {}
    if args.method in ("pyscf", "dft"):
        options = {"xc": args.xc, "basis": args.basis, "gpu": args.gpu}
    elif args.method == "hf":
        options = {"basis": args.basis, "gpu": args.gpu}
    summary = label_dataset(
        read_structures(args.input),
        args.output,
        args.method,
        options,
        args.workers,
        args.chunk_size,
        retry_failed=args.retry_failed,
        address=args.address,
    )
    print(summary)


def run_merge(args) -> None:
    from ..data.extxyz import read_structures, write_structures

    structures, seen = [], set()
    for path in args.inputs:
        for s in read_structures(path):
            if s.id not in seen:  # two runs labelling the same id: keep the first
                seen.add(s.id)
                structures.append(s)
    write_structures(args.output, structures)
    print(f"wrote {len(structures)} structures to {args.output}")

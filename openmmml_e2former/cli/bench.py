"""``e2former bench speed|scaling-set|accuracy``: the speed and memory harness
(:mod:`openmmml_e2former.bench.speed`), the size-scaling benchmark set
(:mod:`openmmml_e2former.data.scaling`) and error vs size (:mod:`openmmml_e2former.bench.accuracy`)."""

from __future__ import annotations


def add_parser(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks: speed and memory vs MACE-OFF23 and AMBER14")
    kinds = bench.add_subparsers(dest="bench_command", required=True)
    speed = kinds.add_parser(
        "speed",
        help="model energy+forces time, OpenMM ms/step, peak memory; JSON + log-log plot",
        description="Every case runs in its own subprocess; targets are reported, not asserted.",
    )
    from ..bench.speed import add_arguments

    add_arguments(speed)
    speed.set_defaults(func=run_speed)

    from ..data.scaling import FAMILIES

    scaling = kinds.add_parser(
        "scaling-set",
        help="generate the size-scaling set (segments, spheres, pairs, shells) with AMBER14 oracle labels",
        description="Resumable: a family whose file exists is kept. GFN2-xTB labels: e2former label run.",
    )
    scaling.add_argument(
        "--out", default="datasets/scaling", help="output folder (default: datasets/scaling)"
    )
    scaling.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    scaling.add_argument("--quick", action="store_true", help="a tiny set from villin (seconds; for tests)")
    scaling.add_argument("--seed", type=int, default=0)
    scaling.add_argument(
        "--label-gfn2",
        action="store_true",
        help="then label the set with GFN2-xTB into OUT/gfn2/all (resumable; evaluation members first)",
    )
    scaling.add_argument(
        "--max-atoms", type=int, default=650, help="largest structure to label with GFN2-xTB"
    )
    scaling.add_argument("--workers", type=int, default=1, help="GFN2-xTB labelling processes")
    scaling.add_argument(
        "--train-large",
        type=int,
        default=0,
        metavar="N",
        help="also write N segments, N spheres and up to N water shells of 161-650 atoms from the training "
        "frames (role train-large, oracle labels; for `bench accuracy --train-large`)",
    )
    scaling.set_defaults(func=run_scaling_set)

    accuracy = kinds.add_parser(
        "accuracy",
        help="force error vs size: local 5 Å, local 8 Å and LSR trained alike; decay curves; JSON + plots",
        description="Builds the set if missing, trains the three models (resumable), evaluates every size.",
    )
    from ..bench.accuracy import add_arguments as accuracy_arguments

    accuracy_arguments(accuracy)
    accuracy.set_defaults(func=run_accuracy)


def run_speed(args) -> int:
    from ..bench.speed import main_from_args

    return main_from_args(args)


def run_scaling_set(args) -> int:
    from ..data.scaling import build_scaling_set

    summary = build_scaling_set(args.out, args.families, quick=args.quick, seed=args.seed)
    for family, counts in summary.items():
        print(f"{family:<9} " + ", ".join(f"{role} {n}" for role, n in sorted(counts.items())))
    if args.train_large:
        from ..data.scaling import build_large_training

        counts = build_large_training(args.out, args.train_large, seed=args.seed, quick=args.quick)
        print("train-large: " + ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())))
    if args.label_gfn2:
        import os

        from ..data.labelling import label_dataset
        from ..data.scaling import gfn2_queue

        queue = gfn2_queue(args.out, args.max_atoms)
        print(f"GFN2-xTB: {len(queue)} structures of <= {args.max_atoms} atoms -> {args.out}/gfn2/all")
        summary = label_dataset(queue, os.path.join(args.out, "gfn2", "all"), "gfn2", workers=args.workers)
        print(summary)
    return 0


def run_accuracy(args) -> int:
    import sys

    from ..bench.accuracy import main_from_args

    return main_from_args(args, sys.argv[3:])

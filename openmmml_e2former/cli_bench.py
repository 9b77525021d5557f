"""``e2former bench speed``: the speed and memory harness (:mod:`openmmml_e2former.bench.speed`)."""

from __future__ import annotations


def add_parser(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks: speed and memory vs MACE-OFF23 and AMBER14")
    kinds = bench.add_subparsers(dest="bench_command", required=True)
    speed = kinds.add_parser(
        "speed",
        help="model energy+forces time, OpenMM ms/step, peak memory; JSON + log-log plot",
        description="Every case runs in its own subprocess; targets are reported, not asserted.",
    )
    from .bench.speed import add_arguments

    add_arguments(speed)
    speed.set_defaults(func=run_speed)


def run_speed(args) -> int:
    from .bench.speed import main_from_args

    return main_from_args(args)

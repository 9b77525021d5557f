"""``e2former demo``: a short ML/MM equilibration of villin, then a report."""

from __future__ import annotations


def add_parser(sub) -> None:
    demo = sub.add_parser("demo", help="short ML/MM equilibration of villin, then a report")
    demo.add_argument("-o", "--output", default="runs/demo", help="output folder")
    demo.add_argument(
        "--steps", type=int, default=200, help="MD steps in all (1 fs; 20/20/60 %% heat/NPT/prod.)"
    )
    demo.add_argument("--platform", default=None, help="OpenMM platform (default: fastest available)")
    demo.set_defaults(func=run_demo)


def run_demo(args) -> None:
    from ..demo import run_demo as demo

    demo(args.output, steps=args.steps, platform=args.platform)

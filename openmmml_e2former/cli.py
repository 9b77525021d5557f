"""The ``e2former`` command: ``export``, ``info`` and ``demo``."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2former", description="E2Former-LSR for OpenMM")
    sub = parser.add_subparsers(dest="command", required=True)

    export = sub.add_parser("export", help="save a checkpoint as TorchScript for openmmtorch.TorchForce")
    export.add_argument("checkpoint", help="openmmml-e2former or authors' E2Former-LSR checkpoint")
    export.add_argument("structure", help="PDB/mmCIF file whose atoms the model is bound to")
    export.add_argument("-o", "--output", required=True, help="output .pt file")
    export.add_argument("--select", default=None, help="mdtraj selection of the ML atoms (default: all)")
    export.add_argument("--precision", choices=["single", "double"], default="single")
    export.add_argument("--charge", type=float, default=0.0, help="total charge of the ML atoms (e)")
    export.add_argument("--head", default=None, help="energy head of an authors' checkpoint")

    info = sub.add_parser("info", help="print a checkpoint's hyperparameters and metadata")
    info.add_argument("checkpoint")

    demo = sub.add_parser("demo", help="short ML/MM equilibration of villin, then a report")
    demo.add_argument("-o", "--output", default="runs/demo", help="output folder")
    demo.add_argument("--steps", type=int, default=200, help="MD steps per stage (1 fs each)")
    demo.add_argument("--platform", default=None, help="OpenMM platform (default: fastest available)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "export":
            from .export import export_structure

            path = export_structure(
                args.checkpoint,
                args.structure,
                args.output,
                select=args.select,
                precision=args.precision,
                charge=args.charge,
                head=args.head,
            )
            print(f"wrote {path}")
        elif args.command == "info":
            from .checkpoints import load_checkpoint

            model, metadata = load_checkpoint(args.checkpoint)
            print(model.config.to_json())
            print(metadata)
        elif args.command == "demo":
            from .demo import run_demo

            run_demo(args.output, steps=args.steps, platform=args.platform)
    except (ValueError, FileNotFoundError) as exc:
        print(f"e2former {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``e2former export``, ``e2former info`` and ``e2former demo``."""

from __future__ import annotations


def add_parser(sub) -> None:
    export = sub.add_parser("export", help="save a checkpoint as TorchScript for openmmtorch.TorchForce")
    export.add_argument("checkpoint", help="openmmml-e2former or authors' E2Former-LSR checkpoint")
    export.add_argument("structure", help="PDB/mmCIF file whose atoms the model is bound to")
    export.add_argument("-o", "--output", required=True, help="output .pt file")
    export.add_argument("--select", default=None, help="mdtraj selection of the ML atoms (default: all)")
    export.add_argument("--precision", choices=["single", "double"], default="single")
    export.add_argument("--charge", type=float, default=0.0, help="total charge of the ML atoms (e)")
    export.add_argument("--head", default=None, help="energy head of an authors' checkpoint")
    export.set_defaults(func=run_export)

    info = sub.add_parser("info", help="print a checkpoint's hyperparameters and metadata")
    info.add_argument("checkpoint")
    info.set_defaults(func=run_info)

    demo = sub.add_parser("demo", help="short ML/MM equilibration of villin, then a report")
    demo.add_argument("-o", "--output", default="runs/demo", help="output folder")
    demo.add_argument(
        "--steps", type=int, default=200, help="MD steps in all (1 fs; 20/20/60 %% heat/NPT/prod.)"
    )
    demo.add_argument("--platform", default=None, help="OpenMM platform (default: fastest available)")
    demo.set_defaults(func=run_demo)


def run_export(args) -> None:
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


def run_info(args) -> None:
    from .checkpoints import load_checkpoint

    model, metadata = load_checkpoint(args.checkpoint)
    print(model.config.to_json())
    print(metadata)


def run_demo(args) -> None:
    from .demo import run_demo as demo

    demo(args.output, steps=args.steps, platform=args.platform)

"""``e2former export CHECKPOINT STRUCTURE -o model.pt``: TorchScript for openmmtorch.TorchForce."""

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


def run_export(args) -> None:
    from ..export import export_structure

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

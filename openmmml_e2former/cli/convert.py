"""``e2former convert CHECKPOINT -o model.pt``: an authors' E2Former-LSR checkpoint in our format.

Turns an authors' checkpoint (training dict or bare state dict) into our deployable format with
metadata (head, energy unit, reference convention, source checksum).
"""

from __future__ import annotations

from ..model.config import ENERGY_UNITS


def add_parser(sub) -> None:
    convert = sub.add_parser("convert", help="convert an authors' E2Former-LSR checkpoint to our format")
    convert.add_argument("checkpoint", help="authors' training checkpoint or state dict (or ours)")
    convert.add_argument("-o", "--output", required=True, help="output checkpoint (.pt)")
    convert.add_argument("--head", default=None, help="energy head to keep (required if several)")
    convert.add_argument(
        "--reference-energies",
        action="store_true",
        help="add the head's known per-element reference energies (absolute energies)",
    )
    convert.add_argument(
        "--energy-unit", choices=ENERGY_UNITS, default=None, help="override the checkpoint's energy unit"
    )
    convert.set_defaults(func=run_convert)


def run_convert(args) -> None:
    from ..checkpoints import convert_checkpoint

    overrides = {"energy_unit": args.energy_unit} if args.energy_unit else {}
    metadata = convert_checkpoint(
        args.checkpoint, args.output, args.head, args.reference_energies, **overrides
    )
    print(f"wrote {args.output}")
    for key in ("source", "head", "available_heads", "energy_unit", "energy_unit_origin"):
        if key in metadata:
            print(f"  {key}: {metadata[key]}")
    print(f"  energy reference: {metadata.get('energy_reference_note', metadata.get('energy_reference'))}")

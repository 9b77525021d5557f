"""``e2former prepare --pdb FILE -o DIR``: only prepare a structure (pdbfixer, hydrogens, solvent, ions)."""

from __future__ import annotations

import os

from .run import add_ligand_arguments, with_ligand_options


def add_parser(sub) -> None:
    prepare = sub.add_parser("prepare", help="only prepare a structure (pdbfixer, hydrogens, solvent, ions)")
    prepare.add_argument("--pdb", required=True, help="input PDB/mmCIF file")
    prepare.add_argument(
        "--protocol", default="protein-equilibration", help="protocol whose prepare/system sections apply"
    )
    prepare.add_argument(
        "-o",
        "--output",
        required=True,
        help="output folder (prepared.pdb, prepare.json, prepare.txt, ligand/)",
    )
    add_ligand_arguments(prepare)
    prepare.set_defaults(func=run_prepare)


def run_prepare(args) -> None:
    from ..simulate.engine import check_ligand_input, prepare_into
    from ..simulate.protocol import load_protocol

    protocol = with_ligand_options(load_protocol(args.protocol), args)
    check_ligand_input(protocol, args.pdb, "none")
    os.makedirs(args.output, exist_ok=True)
    prepared = os.path.join(args.output, "prepared.pdb")
    if os.path.isfile(prepared):
        raise ValueError(f"{prepared} exists: choose another -o (it is never overwritten)")
    _, lines = prepare_into(args.output, protocol, args.pdb, has_ml=True)
    for line in lines:
        print(line)
    print(f"wrote {args.output}/prepared.pdb, prepare.json, prepare.txt")

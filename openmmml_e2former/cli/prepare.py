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
    from ..simulate.engine import _write_pdb
    from ..simulate.ligand import LigandSpec, prepare_ligand
    from ..simulate.prepare import format_report, prepare_structure
    from ..simulate.protocol import load_protocol
    from ..simulate.restart import atomic_write_json, atomic_write_text
    from ..simulate.system import forcefield_files, load_forcefield, resolve_min_box

    protocol = with_ligand_options(load_protocol(args.protocol), args)
    spec = LigandSpec.from_options(protocol.ligand)
    ligand = prepare_ligand(args.pdb, spec, args.output) if spec and spec.has_template else None
    files = forcefield_files(protocol.system, protocol.prepare["water_model"])
    forcefield = load_forcefield(files + ([ligand.xml_path] if ligand else []))
    options = resolve_min_box(protocol.prepare, protocol.potential, ml_selected=True)
    topology, positions, report = prepare_structure(args.pdb, options, forcefield, ligand)
    os.makedirs(args.output, exist_ok=True)
    lines = format_report(report)
    atomic_write_json(os.path.join(args.output, "prepare.json"), report)
    atomic_write_text(os.path.join(args.output, "prepare.txt"), "\n".join(lines) + "\n")
    _write_pdb(os.path.join(args.output, "prepared.pdb"), topology, positions)
    for line in lines:
        print(line)
    print(f"wrote {args.output}/prepared.pdb, prepare.json, prepare.txt")

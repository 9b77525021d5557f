"""``e2former run PROTOCOL --pdb FILE -o DIR``: prepare a structure and run a protocol (resumable)."""

from __future__ import annotations

import os
import sys


def add_parser(sub) -> None:
    run = sub.add_parser("run", help="prepare a PDB file and run a protocol (resumes an interrupted run)")
    run.add_argument("protocol", help="protocol YAML file or preset name (e2former protocols lists them)")
    run.add_argument("--pdb", required=True, help="input PDB/mmCIF file")
    run.add_argument(
        "--ml",
        default=None,
        help='mdtraj selection of the ML region ("none" = pure MM); default: the protocol\'s ml.selection',
    )
    run.add_argument("-o", "--output", required=True, help="run folder")
    run.add_argument("--overwrite", action="store_true", help="delete an existing run in the folder first")
    run.add_argument(
        "--platform", default=None, help="OpenMM platform (default: the protocol's, auto = fastest)"
    )
    add_ligand_arguments(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--analyze", action="store_true", help="write the analysis report when the run is done")
    run.set_defaults(func=run_run)


def run_run(args) -> int:
    from ..simulate import SimulationError, load_protocol, run_protocol

    protocol = with_ligand_options(load_protocol(args.protocol), args)
    try:
        run_protocol(
            protocol,
            args.pdb,
            args.output,
            ml_selection=args.ml,
            overwrite=args.overwrite,
            platform=args.platform,
            progress=not args.no_progress,
        )
    except SimulationError as exc:
        print(f"e2former run: stopped: {exc}", file=sys.stderr)
        return 3
    if args.analyze:
        from ..analysis.report import analyze_run

        analyze_run(args.output)
    return 0


def add_ligand_arguments(parser) -> None:
    """``--ligand``, ``--ligand-smiles``, ``--ligand-sdf`` (for ``run`` and ``prepare``)."""
    ligand = parser.add_argument_group("ligand (docs/ligands.md; overrides the protocol's ligand section)")
    ligand.add_argument(
        "--ligand", default=None, metavar="RESNAME", help="the ligand's residue name in --pdb"
    )
    ligand.add_argument("--ligand-smiles", default=None, metavar="SMILES", help="its chemistry as SMILES")
    ligand.add_argument(
        "--ligand-sdf", default=None, metavar="FILE", help="or as an SDF/MOL2 file (one molecule)"
    )


def with_ligand_options(protocol, args):
    """The protocol with ``--ligand``, ``--ligand-smiles`` and ``--ligand-sdf`` in its ligand
    section (a SMILES replaces the protocol's SDF and the other way round)."""
    from ..simulate.protocol import check_ligand

    given = {"resname": args.ligand, "smiles": args.ligand_smiles, "sdf": args.ligand_sdf}
    if not any(given.values()):
        return protocol
    if args.ligand_smiles or args.ligand_sdf:
        protocol.ligand.update(smiles=None, sdf=None)
    if args.ligand_sdf:
        given["sdf"] = os.path.abspath(args.ligand_sdf)
    protocol.ligand.update({k: v for k, v in given.items() if v})
    check_ligand(protocol.ligand, "command line")
    return protocol

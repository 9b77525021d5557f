"""``e2former run PROTOCOL --pdb FILE -o DIR``: prepare a structure and run a protocol (resumable)."""

from __future__ import annotations

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
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--analyze", action="store_true", help="write the analysis report when the run is done")
    run.set_defaults(func=run_run)


def run_run(args) -> int:
    from ..simulate import SimulationError, load_protocol, run_protocol

    protocol = load_protocol(args.protocol)
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

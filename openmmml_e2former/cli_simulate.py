"""``e2former run``, ``e2former prepare``, ``e2former analyze`` and ``e2former protocols``."""

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
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--analyze", action="store_true", help="write the analysis report when the run is done")
    run.set_defaults(func=run_run)

    prepare = sub.add_parser("prepare", help="only prepare a structure (pdbfixer, hydrogens, solvent, ions)")
    prepare.add_argument("--pdb", required=True, help="input PDB/mmCIF file")
    prepare.add_argument(
        "--protocol", default="protein-equilibration", help="protocol whose prepare/system sections apply"
    )
    prepare.add_argument(
        "-o", "--output", required=True, help="output folder (prepared.pdb, prepare.json, prepare.txt)"
    )
    prepare.set_defaults(func=run_prepare)

    analyze = sub.add_parser("analyze", help="mdtraj analysis of a run folder: plots, summary, HTML report")
    analyze.add_argument("run_dir", help="folder written by e2former run")
    analyze.add_argument("-o", "--output", default=None, help="report folder (default: RUN_DIR/analysis)")
    analyze.set_defaults(func=run_analyze)

    presets = sub.add_parser("protocols", help="list the shipped protocol presets")
    presets.set_defaults(func=run_protocols)


def run_run(args) -> int:
    from .simulate import SimulationError, load_protocol, run_protocol

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
        from .analysis.report import analyze_run

        analyze_run(args.output)
    return 0


def run_prepare(args) -> None:
    from .simulate.engine import _write_pdb
    from .simulate.prepare import format_report, prepare_structure
    from .simulate.protocol import load_protocol
    from .simulate.restart import atomic_write_json, atomic_write_text
    from .simulate.system import forcefield_files, load_forcefield, resolve_min_box

    protocol = load_protocol(args.protocol)
    forcefield = load_forcefield(forcefield_files(protocol.system, protocol.prepare["water_model"]))
    options = resolve_min_box(protocol.prepare, protocol.potential, ml_selected=True)
    topology, positions, report = prepare_structure(args.pdb, options, forcefield)
    os.makedirs(args.output, exist_ok=True)
    lines = format_report(report)
    atomic_write_json(os.path.join(args.output, "prepare.json"), report)
    atomic_write_text(os.path.join(args.output, "prepare.txt"), "\n".join(lines) + "\n")
    _write_pdb(os.path.join(args.output, "prepared.pdb"), topology, positions)
    for line in lines:
        print(line)
    print(f"wrote {args.output}/prepared.pdb, prepare.json, prepare.txt")


def run_analyze(args) -> None:
    from .analysis.report import analyze_run

    analyze_run(args.run_dir, args.output)


def run_protocols(args) -> None:
    from .simulate.protocol import list_presets, load_protocol, protocols_dir

    print(f"presets in {protocols_dir()}:")
    for name in list_presets():
        print(f"  {name:24s} {load_protocol(name).description}")

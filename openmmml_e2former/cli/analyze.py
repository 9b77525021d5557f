"""``e2former analyze RUN_DIR``: mdtraj analysis of a run folder (plots, summary, HTML report)."""

from __future__ import annotations


def add_parser(sub) -> None:
    analyze = sub.add_parser("analyze", help="mdtraj analysis of a run folder: plots, summary, HTML report")
    analyze.add_argument("run_dir", help="folder written by e2former run")
    analyze.add_argument("-o", "--output", default=None, help="report folder (default: RUN_DIR/analysis)")
    analyze.set_defaults(func=run_analyze)


def run_analyze(args) -> None:
    from ..analysis.report import analyze_run

    analyze_run(args.run_dir, args.output)

"""The ``e2former`` command: one module of this package per sub-command.

Each module in ``COMMAND_MODULES`` defines ``add_parser(subparsers)``, which adds its parser and
sets ``func`` (called with the parsed arguments, returns an exit code or None); the list gives
the order ``e2former --help`` shows. Heavy imports (torch, OpenMM, the research tools) stay
inside the command functions. Errors a user can fix (bad input, missing files) are
``ValueError``/``FileNotFoundError`` and are printed as one line with exit code 2; Ctrl-C prints
one line (how to resume, for the commands that can) with exit code 130 instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = [
    "export",
    "info",
    "demo",
    "label",  # label generate|run|merge
    "train",
    "evaluate",  # alias: eval
    "run",
    "campaign",
    "complex",
    "prepare",
    "analyze",
    "protocols",
    "convert",
    "bench",  # bench speed|scaling-set|accuracy
]
COMMAND_MODULES = [f"{__name__}.{name}" for name in COMMANDS]

# What a Ctrl-C leaves behind, for the commands that resume.
RESUME_HINTS = {
    "run": "; run the same command again to continue from the last checkpoint of the unfinished stage",
    "label run": "; run the same command again: finished chunks are kept",
    "campaign": "; run the same command again: finished runs are skipped, the others resume",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2former", description="E2Former-LSR for OpenMM")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as exc:  # ImportError: a missing extra, named
        print(f"e2former {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        command = " ".join(filter(None, [args.command, getattr(args, "label_command", None)]))
        hint = RESUME_HINTS.get(command, "")
        print(f"e2former {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    return int(code or 0)

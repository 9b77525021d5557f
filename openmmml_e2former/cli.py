"""The ``e2former`` command.

Each sub-command lives in a module that defines ``add_parser(subparsers)``; that function
adds its parser and sets ``func`` (called with the parsed arguments, returns an exit code
or None). ``COMMAND_MODULES`` lists those modules in the order ``e2former --help`` shows.
Errors a user can fix (bad input, missing files) are ``ValueError``/``FileNotFoundError``
and are printed as one line with exit code 2; Ctrl-C prints one line (how to resume, for the
commands that can) with exit code 130 instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "openmmml_e2former.cli_core",  # export, info, demo
    "openmmml_e2former.cli_train",  # label, train, evaluate
    "openmmml_e2former.cli_simulate",  # run, prepare, analyze, protocols
    "openmmml_e2former.cli_checkpoints",  # convert, eval
    "openmmml_e2former.cli_bench",  # bench speed
]

# What a Ctrl-C leaves behind, for the commands that resume.
RESUME_HINTS = {
    "run": "; run the same command again to continue from the last checkpoint of the unfinished stage",
    "label run": "; run the same command again: finished chunks are kept",
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
    except (ValueError, FileNotFoundError) as exc:
        print(f"e2former {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        command = " ".join(filter(None, [args.command, getattr(args, "label_command", None)]))
        hint = RESUME_HINTS.get(command, "")
        print(f"e2former {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())

"""Thin wrapper around ``e2former bench speed`` (``openmmml_e2former.bench.speed``).

Writes to ``benchmarks/results/speed_<device>[_quick].json`` (+ ``.png``) unless ``--out`` is
given; every other option is the command's (``python benchmarks/speed.py --help``).

    python benchmarks/speed.py --quick                       # CI smoke version, CPU
    python benchmarks/speed.py --device cuda --budget-s 480  # GPU run, headline cases first
"""

from __future__ import annotations

import sys
from pathlib import Path

from openmmml_e2former.bench.speed import main

RESULTS = Path(__file__).resolve().parent / "results"


def default_out(argv: list[str]) -> list[str]:
    if any(a == "--out" or a.startswith("--out=") for a in argv) or "--list" in argv:
        return argv
    device = "cuda" if any(a in ("cuda", "--device=cuda") for a in argv) else "cpu"
    name = f"speed_{device}{'_quick' if '--quick' in argv else ''}.json"
    return [*argv, "--out", str(RESULTS / name)]


if __name__ == "__main__":
    sys.exit(main(default_out(sys.argv[1:])))

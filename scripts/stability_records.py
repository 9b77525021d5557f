"""Pack and unpack the bulky files of the MD run records in ``stability/<run>-run/``.

Each run folder keeps its small records in git as files (state CSV, logs, JSON summaries) and its
bulky ones -- DCD frames, OpenMM ``state.xml``/``checkpoint.chk`` and PDB files, 28 MB of the
30 MB -- in one ``records.tar.xz`` (12 MB). This keeps the tree small enough to travel with the
wheels to a lent GPU machine (64 MiB in all, ``benchmarks/gpu/README.md``). The unpacked files
are ignored by git (``.gitignore``).

    python scripts/stability_records.py unpack            # every run folder (skips files present)
    python scripts/stability_records.py unpack RUN_DIR    # one folder
    python scripts/stability_records.py pack RUN_DIR      # maintainers: (re)write its archive

``scripts/stability.py``, ``scripts/write_model_card.py`` and
``scripts/extract_dataset_sources.py`` unpack what they read themselves. Unpack before you read a
run folder with anything else (``research/*.py``, ``e2former analyze``, a resume).
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STABILITY = os.path.join(ROOT, "stability")
SUFFIXES = (".dcd", ".xml", ".chk", ".pdb")
SKIP = {"system.xml"}  # 14 MB, rewritten on resume: never kept
ARCHIVE = "records.tar.xz"


def run_folders() -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(STABILITY, "*-run")) if os.path.isdir(p))


def bulky_files(folder: str) -> list[str]:
    """Paths relative to ``folder`` of the files that go into its archive."""
    out = []
    for base, _, names in os.walk(folder):
        kept = [n for n in names if n.endswith(SUFFIXES) and n not in SKIP]
        out += [os.path.relpath(os.path.join(base, n), folder) for n in kept]
    return sorted(out)


def pack(folder: str) -> str:
    """Write ``folder/records.tar.xz`` from its bulky files (fixed order, times and owners, so the
    same files give the same archive)."""
    path = os.path.join(folder, ARCHIVE)
    tmp = f"{path}.tmp"
    with tarfile.open(tmp, "w:xz", preset=9) as tar:
        for name in bulky_files(folder):
            with open(os.path.join(folder, name), "rb") as handle:
                data = handle.read()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, path)
    return path


def unpack(folder: str) -> list[str]:
    """Extract the archive's files that ``folder`` lacks (a file already there is kept: it may be
    newer, e.g. a resumed run's checkpoint). Returns the names extracted."""
    path = os.path.join(folder, ARCHIVE)
    if not os.path.exists(path):
        return []
    done = []
    with tarfile.open(path, "r:xz") as tar:
        for member in tar.getmembers():
            if member.isfile() and not os.path.exists(os.path.join(folder, member.name)):
                tar.extract(member, folder, filter="data")
                done.append(member.name)
    return done


def unpack_for(path: str) -> None:
    """Unpack the run folder(s) under ``stability/`` that ``path`` is, or lies in."""
    path = os.path.abspath(path)
    for folder in run_folders():
        if path == folder or path.startswith(folder + os.sep) or folder.startswith(path + os.sep):
            unpack(folder)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("action", choices=("pack", "unpack"))
    parser.add_argument("folders", nargs="*", help="run folders (default: every stability/*-run)")
    args = parser.parse_args()
    folders = args.folders or run_folders()
    for folder in folders:
        if args.action == "pack":
            print(f"{pack(folder)}: {len(bulky_files(folder))} files")
        else:
            print(f"{folder}: {len(unpack(folder))} files unpacked")


if __name__ == "__main__":
    main()

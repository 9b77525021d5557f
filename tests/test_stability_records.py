"""scripts/stability_records.py: the run records' bulky files round-trip through their archive."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import stability_records  # noqa: E402


def test_pack_then_unpack_restores_the_bulky_files_and_keeps_newer_ones(tmp_path):
    run = tmp_path / "villin-run"
    (run / "stages" / "02-nvt").mkdir(parents=True)
    files = {
        "prepared.pdb": b"ATOM      1  N   MET A   1\n",
        "stages/02-nvt/trajectory.dcd": bytes(range(256)) * 10,
        "stages/02-nvt/state.xml": b"<State/>",
        "stages/02-nvt/checkpoint.chk": b"\x00\x01binary",
        "stages/02-nvt/system.xml": b"<System/> never packed",
        "stages/02-nvt/state.csv": b"step,energy\n",  # a small record: stays a file in git
    }
    for name, data in files.items():
        (run / name).write_bytes(data)
    stability_records.pack(str(run))
    assert stability_records.bulky_files(str(run)) == sorted(
        [
            "prepared.pdb",
            "stages/02-nvt/trajectory.dcd",
            "stages/02-nvt/state.xml",
            "stages/02-nvt/checkpoint.chk",
        ]
    )
    first = (run / "records.tar.xz").read_bytes()
    stability_records.pack(str(run))
    assert (run / "records.tar.xz").read_bytes() == first  # same files, same archive

    for name in stability_records.bulky_files(str(run)):
        os.remove(run / name)
    (run / "stages/02-nvt/checkpoint.chk").write_bytes(b"newer")  # e.g. a resumed run's
    unpacked = stability_records.unpack(str(run))
    assert sorted(unpacked) == ["prepared.pdb", "stages/02-nvt/state.xml", "stages/02-nvt/trajectory.dcd"]
    for name in ("prepared.pdb", "stages/02-nvt/trajectory.dcd", "stages/02-nvt/state.xml"):
        assert (run / name).read_bytes() == files[name]
    assert (run / "stages/02-nvt/checkpoint.chk").read_bytes() == b"newer"
    assert stability_records.unpack(str(run)) == []  # nothing left to do


def test_every_committed_run_folder_has_its_archive():
    folders = stability_records.run_folders()
    assert folders
    for folder in folders:
        assert os.path.exists(os.path.join(folder, stability_records.ARCHIVE)), folder

"""Run folders that survive a kill: atomic writes, a manifest, and trimming of outputs.

A run is resumed from the last checkpoint of its unfinished stage.  Everything a stage
reports after that checkpoint is trimmed away before the run continues, so the stitched
trajectory and state CSV have each frame and step exactly once.  The counts kept follow
from the checkpoint's step ``S``: reporters fire at steps ``k * interval`` (k >= 1), so
``S // interval`` frames (rows) were written up to and including step ``S``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct

from ..checkpoints import file_sha256  # noqa: F401  (run manifests record the input's digest)

MANIFEST = "run.json"


def atomic_write_text(path: str, text: str) -> None:
    """Write a file through a temporary sibling and ``os.replace`` (never half-written)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


def read_json(path: str):
    with open(path) as handle:
        return json.load(handle)


SESSIONS = "sessions.json"


def record_session(folder: str, platform: str) -> list[dict]:
    """Append this start or resume of a run to ``sessions.json``: when, where (OpenMM platform,
    host) and with which OpenMM and PyTorch, so a run folder says what it ran on, piece by piece
    (a checkpoint only loads on the platform that wrote it). Returns the updated list."""
    import datetime
    import platform as host

    import openmm
    import torch

    path = os.path.join(folder, SESSIONS)
    sessions = read_json(path) if os.path.isfile(path) else []
    sessions.append(
        {
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "platform": platform,
            "host": host.node(),
            "openmm": openmm.__version__,
            "torch": torch.__version__,
        }
    )
    atomic_write_json(path, sessions)
    return sessions


def open_run_folder(folder: str, manifest: dict, overwrite: bool) -> bool:
    """Create or reopen a run folder; return True when an earlier run is being resumed.

    A folder holding a different run (another protocol, structure or ML selection) is an
    error unless ``overwrite``; ``overwrite`` deletes only folders that are run folders.
    """
    path = os.path.join(folder, MANIFEST)
    if os.path.isdir(folder) and os.listdir(folder):
        if not os.path.isfile(path):
            raise ValueError(
                f"output folder {folder} exists and is not an e2former run folder (no {MANIFEST}); "
                "choose another -o"
            )
        if overwrite:
            _refuse_to_delete_cwd(folder)
            shutil.rmtree(folder)
        else:
            previous = read_json(path)
            _check_same_run(previous, manifest, folder)
            _record_guard(path, previous, manifest)
            return True
    os.makedirs(folder, exist_ok=True)
    atomic_write_json(path, manifest)
    return False


def _refuse_to_delete_cwd(folder: str) -> None:
    """``--overwrite`` must not delete the current directory or a folder above it (``-o .``)."""
    target = os.path.realpath(folder)
    here = os.path.realpath(os.getcwd())
    if os.path.commonpath([target, here]) == target:
        raise ValueError(
            f"--overwrite would delete {target}, which holds the current directory {here}; "
            "give -o a subfolder (e.g. -o runs/my) or run from outside it"
        )


def _check_same_run(previous: dict, current: dict, folder: str) -> None:
    labels = {
        "protocol": "protocol",
        "structure_sha256": "input structure",
        "ml_selection": "ML selection",
        "random_weights": "potential (random network vs trained weights)",
        "weights_sha256": "weights file (SHA-256; new shipped weights or an edited modelPath file?)",
    }
    for key, label in labels.items():
        if key == "weights_sha256" and key not in previous:
            continue  # run folders written before the digest was recorded
        old = json.dumps(_compared(previous, key), sort_keys=True, default=str)
        if old != json.dumps(_compared(current, key), sort_keys=True, default=str):
            raise ValueError(
                f"{folder} holds a run with a different {label}; rerun the same command to resume it, "
                "or pass --overwrite to start again (deletes that run)"
            )


def _record_guard(path: str, previous: dict, current: dict) -> None:
    """A resumed run may use other guard settings: the manifest records the ones now in force
    (only the guard is rewritten; the rest of an older manifest stays as it was)."""
    old = (previous.get("protocol") or {}).get("guard")
    new = (current.get("protocol") or {}).get("guard")
    if isinstance(previous.get("protocol"), dict) and new is not None and old != new:
        previous["protocol"]["guard"] = new
        atomic_write_json(path, previous)


def _compared(manifest: dict, key: str):
    """The part of a manifest entry that must match to resume: the guard settings of a protocol
    do not change the physics, so a stopped run can be resumed with another guard."""
    value = manifest.get(key)
    if key == "protocol" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "guard"}
    return value


# --------------------------------------------------------------------------- trimming


DCD_BOX_BYTES = 4 + 48 + 4


def dcd_layout(path: str) -> tuple[int, int, int, bool]:
    """``(header_bytes, frame_bytes, frames_in_header, has_box)`` of a DCD file written by OpenMM."""
    with open(path, "rb") as handle:
        head = handle.read(100)
        if len(head) < 100 or head[4:8] != b"CORD":
            raise ValueError(f"{path} is not a DCD file")
        frames = struct.unpack("<i", head[8:12])[0]
        has_box = struct.unpack("<i", head[48:52])[0] == 1
        handle.seek(92)
        comment_bytes = struct.unpack("<i", handle.read(4))[0]
        handle.seek(104 + comment_bytes)
        n_atoms = struct.unpack("<i", handle.read(4))[0]
    header = 104 + comment_bytes + 8
    frame = (DCD_BOX_BYTES if has_box else 0) + 3 * (8 + 4 * n_atoms)
    return header, frame, frames, has_box


def dcd_frame_count(path: str) -> int:
    """Complete frames on disk (a frame cut short by a kill does not count; nor does a file
    whose header is not written yet)."""
    if os.path.getsize(path) < 120:
        return 0
    header, frame, _, _ = dcd_layout(path)
    return max(0, (os.path.getsize(path) - header) // frame)


def trim_dcd(path: str, n_frames: int) -> None:
    """Keep the first ``n_frames`` frames of an OpenMM DCD file (copy, trim, ``os.replace``)."""
    header, frame, _, _ = dcd_layout(path)
    have = dcd_frame_count(path)
    if have < n_frames:
        raise ValueError(
            f"{path} holds {have} complete frames, fewer than the {n_frames} its checkpoint implies"
        )
    tmp = f"{path}.tmp"
    shutil.copyfile(path, tmp)
    with open(tmp, "r+b") as handle:
        handle.truncate(header + n_frames * frame)
        handle.seek(8)
        handle.write(struct.pack("<i", n_frames))
        handle.seek(12)
        first_step, interval = struct.unpack("<ii", handle.read(8))
        handle.seek(20)
        handle.write(struct.pack("<i", first_step + max(0, n_frames - 1) * interval))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def trim_xtc(path: str, n_frames: int) -> None:
    """Keep the first ``n_frames`` frames of an XTC file (copied frame by frame, then ``os.replace``).

    Frames are read one at a time and reading stops after ``n_frames``, so a last frame cut
    short by a kill (which may not decode) is never needed; a file with fewer readable
    frames than ``n_frames`` is an error.
    """
    from mdtraj.formats import XTCTrajectoryFile

    frames = []
    with XTCTrajectoryFile(path, "r") as reader:
        while len(frames) < n_frames:
            try:
                xyz, time, step, box = reader.read(n_frames=1)
            except Exception:  # a frame cut short: treated as missing
                break
            if len(xyz) == 0:
                break
            frames.append((xyz, time, step, box))
    if len(frames) < n_frames:
        raise ValueError(
            f"{path} holds {len(frames)} readable frames, fewer than the {n_frames} its checkpoint implies"
        )
    tmp = f"{path}.tmp.xtc"
    with XTCTrajectoryFile(tmp, "w") as writer:
        for xyz, time, step, box in frames:
            writer.write(xyz, time=time, step=step, box=box)
    os.replace(tmp, path)


def trim_csv(path: str, n_rows: int) -> None:
    """Keep the header line and the first ``n_rows`` complete data rows of a state CSV."""
    with open(path) as handle:
        lines = handle.readlines()
    header = [line for line in lines[:1] if line.startswith("#")]
    rows = [line for line in lines[len(header) :] if line.endswith("\n")]
    if len(rows) < n_rows:
        raise ValueError(f"{path} holds {len(rows)} rows, fewer than the {n_rows} its checkpoint implies")
    atomic_write_text(path, "".join(header + rows[:n_rows]))

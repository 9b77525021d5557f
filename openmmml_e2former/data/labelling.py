"""Label a dataset in resumable chunks, in parallel over processes, with a progress bar.

Output: a folder of ``chunk-NNNNN.extxyz`` files. A single writer (the main process) rewrites the
current chunk atomically (temporary file + ``os.replace``) after every labelled structure, so a
killed run loses at most the structures in flight, and a restart skips every id already written
(and every id listed in ``failed.jsonl``).
"""

from __future__ import annotations

import glob
import json
import os
import time
import warnings

from .extxyz import read_structures, write_structures
from .structure import Structure

_LABELLER = None
_INIT_ERROR = None


def _init_worker(name: str, options: dict) -> None:
    """Pool initializer. It must not raise: a Pool replaces a worker whose initializer fails, for
    ever, so an error is kept and reported for each structure instead."""
    global _LABELLER, _INIT_ERROR
    from .labellers import make_labeller

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    try:
        _LABELLER = make_labeller(name, **options)
    except Exception as exc:
        _INIT_ERROR = f"cannot create the labeller: {type(exc).__name__}: {exc}"


def _label_one(structure: Structure):
    if _LABELLER is None:
        return structure, _INIT_ERROR or "no labeller in this worker"
    try:
        return _LABELLER.apply(structure), None
    except Exception as exc:  # record and continue: one bad structure must not stop the run
        return structure, f"{type(exc).__name__}: {exc}"


def done_ids(output_dir: str, include_failed: bool = True) -> set[str]:
    """Ids already labelled (in ``chunk-*.extxyz``) or (``include_failed``) recorded as failed."""
    ids = set()
    for path in sorted(glob.glob(os.path.join(output_dir, "chunk-*.extxyz"))):
        ids.update(s.id for s in read_structures(path))
    failed = os.path.join(output_dir, "failed.jsonl")
    if include_failed and os.path.exists(failed):
        ids.update(_failed_ids(failed))
    return ids


def _failed_ids(path: str) -> set[str]:
    """Ids in ``failed.jsonl``; an unreadable line (a run killed while writing it) is skipped with
    a warning, so its structure is simply labelled again."""
    ids = set()
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                ids.add(json.loads(line)["id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                message = f"{path} line {number} is unreadable; that structure will be labelled again"
                warnings.warn(message, stacklevel=3)
    return ids


def _next_chunk_index(output_dir: str) -> int:
    names = glob.glob(os.path.join(output_dir, "chunk-*.extxyz"))
    return 1 + max((int(os.path.basename(n)[6:11]) for n in names), default=-1)


def label_dataset(
    structures: list[Structure],
    output_dir: str,
    labeller: str = "gfn2",
    options: dict | None = None,
    workers: int = 1,
    chunk_size: int = 100,
    progress: bool = True,
    retry_failed: bool = False,
) -> dict:
    """Label every structure not yet in ``output_dir``; returns counts and CPU seconds.

    ``retry_failed`` labels again the structures listed in ``failed.jsonl`` (new failures are
    appended again; the latest line for an id is the one that counts)."""
    from multiprocessing import get_context

    from tqdm import tqdm

    from .labellers import make_labeller

    make_labeller(labeller, **(options or {}))  # a bad name or option fails here, before any output
    os.makedirs(output_dir, exist_ok=True)
    seen = done_ids(output_dir, include_failed=not retry_failed)
    ids = [s.id for s in structures]
    if len(set(ids)) != len(ids):
        raise ValueError("structure ids are not unique")
    todo = [s for s in structures if s.id not in seen]
    summary = {"total": len(structures), "already_done": len(structures) - len(todo), "labelled": 0}
    summary.update(failed=0, label_cpu_seconds=0.0)
    if not todo:
        return summary
    chunk_index, chunk = _next_chunk_index(output_dir), []
    start = time.time()
    bar = tqdm(total=len(todo), desc=f"labelling ({labeller}, {workers} process(es))", disable=not progress)
    with get_context("spawn" if workers > 1 else "fork").Pool(
        workers, initializer=_init_worker, initargs=(labeller, dict(options or {}))
    ) as pool:
        for result, error in pool.imap_unordered(_label_one, todo, chunksize=1):
            bar.update(1)
            if error is not None:
                summary["failed"] += 1
                with open(os.path.join(output_dir, "failed.jsonl"), "a") as handle:
                    handle.write(json.dumps({"id": result.id, "error": error}) + "\n")
                continue
            chunk.append(result)
            summary["labelled"] += 1
            summary["label_cpu_seconds"] += float(result.labels.get("label_seconds", 0.0))
            write_structures(os.path.join(output_dir, f"chunk-{chunk_index:05d}.extxyz"), chunk)
            if len(chunk) >= chunk_size:
                chunk_index, chunk = chunk_index + 1, []
    bar.close()
    summary["wall_seconds"] = round(time.time() - start, 1)
    return summary

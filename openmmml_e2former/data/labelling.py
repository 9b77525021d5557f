"""Label a dataset in resumable chunks, in parallel on Dask workers, with a progress bar.

Output: a folder of ``chunk-NNNNN.extxyz.gz`` files. A single writer (the main process) rewrites the
current chunk atomically (temporary file + ``os.replace``) after every labelled structure, so a
killed run loses at most the structures in flight, and a restart skips every id already written
(and every id listed in ``failed.jsonl``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
import warnings

from .extxyz import read_structures, write_structures
from .structure import Structure

#: labellers already created in this process (a Dask worker keeps one per method and options)
_LABELLERS: dict = {}


def _labeller(name: str, options: dict, worker: bool):
    from .labellers import make_labeller

    key = (name, json.dumps(options, sort_keys=True, default=str))
    if key not in _LABELLERS:
        if worker:  # a Dask worker process: one core each
            try:
                import torch

                torch.set_num_threads(1)
            except ImportError:
                pass
        _LABELLERS[key] = make_labeller(name, **options)
    return _LABELLERS[key]


def label_one(structure: Structure, name: str, options: dict, worker: bool = False):
    """``(labelled structure, None)`` or ``(structure, error text)``; never raises, so that one bad
    structure (or a labeller a worker cannot create) is recorded and the others go on."""
    try:
        labeller = _labeller(name, options, worker)
    except Exception as exc:
        return structure, f"cannot create the labeller: {type(exc).__name__}: {exc}"
    try:
        return labeller.apply(structure), None
    except Exception as exc:  # record and continue
        return structure, f"{type(exc).__name__}: {exc}"


def chunk_files(output_dir: str) -> list[str]:
    """The chunk files of a labelling folder: ``chunk-NNNNN.extxyz.gz`` (written since
    2026-12-05, about a quarter of the size) and older ``chunk-NNNNN.extxyz``; temporary files of
    an interrupted write are not chunks."""
    names = glob.glob(os.path.join(output_dir, "chunk-*.extxyz"))
    names += glob.glob(os.path.join(output_dir, "chunk-*.extxyz.gz"))
    return sorted(names)


def done_ids(output_dir: str, include_failed: bool = True) -> set[str]:
    """Ids already labelled (in the chunk files) or (``include_failed``) recorded as failed."""
    ids = set()
    for path in chunk_files(output_dir):
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
    return 1 + max((int(os.path.basename(n)[6:11]) for n in chunk_files(output_dir)), default=-1)


def label_dataset(
    structures: list[Structure],
    output_dir: str,
    labeller: str = "gfn2",
    options: dict | None = None,
    workers: int = 1,
    chunk_size: int = 100,
    progress: bool = True,
    retry_failed: bool = False,
    address: str | None = None,
) -> dict:
    """Label every structure not yet in ``output_dir``; returns counts and CPU seconds.

    ``workers`` > 1 labels on a local Dask cluster of that many processes, ``address`` on a
    running Dask scheduler (``docs/campaigns.md``); one worker labels in this process.

    ``retry_failed`` labels again the structures listed in ``failed.jsonl`` (new failures are
    appended again; the latest line for an id is the one that counts)."""
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
    where = f"Dask at {address}" if address else f"{workers} process(es)"
    bar = tqdm(total=len(todo), desc=f"labelling ({labeller}, {where})", disable=not progress)
    for result, error in _results(todo, labeller, dict(options or {}), workers, address):
        bar.update(1)
        if error is not None:
            summary["failed"] += 1
            with open(os.path.join(output_dir, "failed.jsonl"), "a") as handle:
                handle.write(json.dumps({"id": result.id, "error": error}) + "\n")
            continue
        chunk.append(result)
        summary["labelled"] += 1
        summary["label_cpu_seconds"] += float(result.labels.get("label_seconds", 0.0))
        write_structures(os.path.join(output_dir, f"chunk-{chunk_index:05d}.extxyz.gz"), chunk)
        if len(chunk) >= chunk_size:
            chunk_index, chunk = chunk_index + 1, []
    bar.close()
    summary["wall_seconds"] = round(time.time() - start, 1)
    return summary


def _results(todo: list[Structure], name: str, options: dict, workers: int, address: str | None):
    """``(structure, error)`` pairs as they finish: in this process for one worker, else as Dask
    tasks on a local cluster of ``workers`` processes or on the scheduler at ``address`` (a task
    whose worker dies is started again elsewhere by Dask)."""
    if workers <= 1 and not address:
        for structure in todo:
            yield label_one(structure, name, options)
        return
    from ..optional import require

    distributed = require("distributed", "campaign", "labelling on several processes")
    cluster = None
    if not address:
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
    tag = hashlib.sha256(json.dumps([name, options], sort_keys=True, default=str).encode()).hexdigest()[:12]
    try:
        with distributed.Client(address or cluster) as client:
            futures = {
                client.submit(label_one, s, name, options, True, key=f"label-{tag}-{k}-{s.id}"): s
                for k, s in enumerate(todo)
            }
            for future in distributed.as_completed(futures):
                try:
                    yield future.result()
                except Exception as exc:  # e.g. KilledWorker: it took down its workers too often
                    yield futures[future], f"{type(exc).__name__}: {exc}"
                future.release()
    finally:  # no worker outlives the labelling, also after an error or Ctrl-C
        if cluster is not None:
            cluster.close()

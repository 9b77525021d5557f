"""Data-parallel training over processes with ``torch.distributed``.

Under ``torchrun`` (environment variables ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set)
:func:`run_training` joins the process group itself; ``e2former train CONFIG --nproc N`` instead
spawns N local processes. Each process trains on ``training.device`` (:func:`resolve_device`: a
GPU of its own when CUDA is present, else the CPU); the backend is nccl for GPUs and gloo for the
CPU (only gloo has been run with several processes; one process on one GPU has been run).
"""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_device(setting, rank: int = 0):
    """``auto`` -> this process's GPU when CUDA is available, else the CPU; ``cpu``; ``cuda``
    (required). The GPU is ``LOCAL_RANK`` under torchrun, else ``rank`` modulo the GPU count."""
    import torch

    mode = str(setting).strip().lower()
    if mode not in ("auto", "cpu", "cuda"):
        raise ValueError(f"training.device must be auto, cpu or cuda, not {setting!r}")
    if mode == "cpu" or (mode == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("training.device is cuda, but PyTorch sees no CUDA device; use auto or cpu")
    local = int(os.environ.get("LOCAL_RANK", rank))
    return torch.device("cuda", local % torch.cuda.device_count())


def plan_device(setting, processes: int) -> str:
    """The ``training.device`` every process of a run will use: nccl needs a GPU of its own per
    process on a node, so with more processes than GPUs ``auto`` trains on the CPU (with a note)
    and ``cuda`` is an error."""
    import torch

    mode = str(setting).strip().lower()
    if mode == "cpu" or not torch.cuda.is_available():
        return mode  # resolve_device turns auto into the CPU and refuses cuda
    count = torch.cuda.device_count()
    if processes <= count:
        return mode
    if mode == "cuda":
        raise ValueError(
            f"{processes} processes per node but {count} GPU(s): nccl needs one GPU per process; "
            f"use --nproc {count} (or torchrun --nproc_per_node {count}) or training.device: cpu"
        )
    print(f"note: {processes} processes but {count} GPU(s): training on the CPU (gloo); use --nproc {count}")
    return "cpu"


def backend_for(device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(rank: int, world_size: int, backend: str = "gloo") -> None:
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group(backend, rank=rank, world_size=world_size)


def _worker(rank: int, world_size: int, port: int, backend: str, fn, args: tuple) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    init_process_group(rank, world_size, backend)
    try:
        fn(rank, world_size, *args)
    finally:
        import torch.distributed as dist

        dist.destroy_process_group()


def spawn(fn, world_size: int, *args, backend: str = "gloo") -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` processes joined by ``backend``."""
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(world_size, free_port(), backend, fn, args), nprocs=world_size, join=True)


def env_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment, or (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))

"""Data-parallel training over processes with ``torch.distributed``.

Under ``torchrun`` (environment variables ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set)
:func:`run_training` joins the process group itself; ``e2former train CONFIG --nproc N`` instead
spawns N local processes. The backend is gloo on CPU and nccl when every process has a GPU
(only gloo has been tested here).
"""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_process_group(rank: int, world_size: int, backend: str = "gloo") -> None:
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group(backend, rank=rank, world_size=world_size)


def _worker(rank: int, world_size: int, port: int, fn, args: tuple) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    init_process_group(rank, world_size)
    try:
        fn(rank, world_size, *args)
    finally:
        import torch.distributed as dist

        dist.destroy_process_group()


def spawn(fn, world_size: int, *args) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` processes joined by gloo."""
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(world_size, free_port(), fn, args), nprocs=world_size, join=True)


def env_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment, or (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))

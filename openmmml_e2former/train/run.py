"""Entry points: train from a config (single process, torchrun, or spawned processes); evaluating a
checkpoint is :mod:`openmmml_e2former.evaluation`."""

from __future__ import annotations

import torch


def _train_rank(rank: int, world_size: int, config: dict, max_steps: int | None = None) -> str:
    from .trainer import Trainer

    trainer = Trainer(config, rank, world_size)
    reason = trainer.fit(max_steps=max_steps)
    if rank == 0:
        print(f"training stopped: {reason}; outputs in {trainer.output}", flush=True)
        if reason in ("finished", "early_stopping", "time_limit"):
            from .metrics import format_table

            result = trainer.final_evaluation()
            rows = result["by_size"] + [{"atoms": "all", **result["overall"]}]
            print(f"final evaluation ({result['split']} split, best.pt):\n" + format_table(rows), flush=True)
    return reason


def run_training(config: dict, nproc: int = 1, max_steps: int | None = None) -> None:
    """Train on this machine with ``nproc`` processes, or join torchrun's process group."""
    import os

    from .ddp import backend_for, env_world, init_process_group, plan_device, resolve_device, spawn

    rank, world_size = env_world()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size)) if world_size > 1 else nproc
    config["training"]["device"] = plan_device(config["training"]["device"], local)
    backend = backend_for(resolve_device(config["training"]["device"], rank))
    if world_size > 1:
        init_process_group(rank, world_size, backend)
        try:
            _train_rank(rank, world_size, config, max_steps)
        finally:
            torch.distributed.destroy_process_group()
    elif nproc > 1:
        spawn(_train_rank, nproc, config, max_steps, backend=backend)
    else:
        _train_rank(0, 1, config, max_steps)

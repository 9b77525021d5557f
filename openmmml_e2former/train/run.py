"""Entry points: train from a config (single process, torchrun, or spawned processes) and evaluate."""

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


def evaluate_checkpoint(
    checkpoint: str, dataset, batch_size: int = 8, threads: int = 1, ids: list[str] | None = None
) -> dict:
    """Errors of a checkpoint on every labelled structure of ``dataset`` (a path or a list of
    paths), or only on those whose id is in ``ids`` (a split side): overall, by size and by
    molecule (split group)."""
    from ..checkpoints import load_checkpoint
    from ..data.splits import group_key
    from .batching import predict, to_sample
    from .metrics import ErrorAccumulator

    torch.set_num_threads(threads)
    model, _ = load_checkpoint(checkpoint)
    model = model.float()
    structures = _read_all([dataset] if isinstance(dataset, str) else list(dataset))
    if ids is not None:
        wanted = set(ids)
        structures = [s for s in structures if s.id in wanted]
        if not structures:
            raise ValueError(f"none of the {len(wanted)} selected ids is in {dataset}")
    samples = [to_sample(s, group_key(s)) for s in structures]
    acc = ErrorAccumulator()
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        energies, forces = predict(model, chunk)
        for s, e, f in zip(chunk, energies, forces, strict=False):
            error = (f.detach() - s.forces).cpu().numpy()
            acc.add(float(e.detach().double() - s.energy), s.num_atoms, error, s.group)
    return {"overall": acc.summary(), "by_size": acc.by_size(), "by_molecule": acc.by_group()}


def _read_all(paths: list[str]) -> list:
    from ..data.extxyz import read_structures

    return [s for path in paths for s in read_structures(path)]

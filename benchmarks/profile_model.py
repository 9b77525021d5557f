"""torch.profiler table of one energy + forces call of the OpenMM module (villin protein).

The shipped small LSR network (random weights, seed 0) wrapped as OpenMM runs it
(``export.OpenMMModule``, fixed-shape graphs), float32, on the villin protein (582 atoms,
non-periodic). Warm-up calls first (the first plans the graphs), then ``--calls`` profiled
calls; prints the operator table sorted by self time on the device and writes it to
``--out``.

    python benchmarks/profile_model.py [--device cpu|cuda] [--calls 5] [--out docs/profile_cpu.txt]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from openmmml_e2former.bench.systems import system_for_size
from openmmml_e2former.export import OpenMMModule, cut_bonds
from openmmml_e2former.fragments import fragment_ids_from_topology
from openmmml_e2former.model import PRESETS, E2FormerLSR


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=582)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    system = system_for_size(args.size)
    torch.manual_seed(0)
    network = E2FormerLSR(PRESETS[args.preset]()).eval()
    atoms = list(system.topology.atoms())
    numbers = [atoms[i].element.atomic_number for i in system.ml_atoms]
    fragments = fragment_ids_from_topology(system.topology, system.ml_atoms)
    caps = cut_bonds(system.topology, system.ml_atoms) if not system.periodic else []
    module = OpenMMModule(network, numbers, fragments, 0.0, system.ml_atoms, caps, system.periodic)
    module = module.to(args.device)
    positions = torch.tensor(system.positions_nm, dtype=torch.float32, device=args.device)
    box = (
        None
        if system.box_nm is None
        else torch.tensor(system.box_nm, dtype=torch.float32, device=args.device)
    )

    def call() -> None:
        x = positions.clone().requires_grad_(True)
        energy = module(x, box)
        torch.autograd.grad(energy, x)
        float(energy.detach())

    for _ in range(3):
        call()
    activities = [ProfilerActivity.CPU]
    sort = "self_cpu_time_total"
    if torch.device(args.device).type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        sort = "self_cuda_time_total"
    with profile(activities=activities) as prof:
        for _ in range(args.calls):
            call()
    header = (
        f"# {args.preset} LSR, {system.n_atoms} atoms ({system.description}), float32, {args.device}, "
        f"{args.calls} energy+forces calls, torch {torch.__version__}; plan: {module.plan_summary()}\n"
    )
    table = prof.key_averages().table(sort_by=sort, row_limit=args.rows)
    print(header + table)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(header + table + "\n")


if __name__ == "__main__":
    main()

"""What autograd keeps for the force: saved tensors of one energy call, by source line.

Builds the OpenMM module (``export.OpenMMModule``, fixed-shape graphs, float32) around the
small network (random weights, seed 0) on a villin system of ``--size`` atoms, runs one
energy call under ``torch.autograd.graph.saved_tensors_hooks`` and attributes every saved
storage (counted once) to the innermost line of this package that created it. Prints the
total and the largest lines, then the process's peak RSS after the backward pass.

    python benchmarks/saved_tensors.py [--size 2000] [--local-only] [--rows 15] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import resource
import traceback

import torch

from openmmml_e2former.bench.systems import system_for_size
from openmmml_e2former.export import OpenMMModule, cut_bonds
from openmmml_e2former.fragments import fragment_ids_from_topology
from openmmml_e2former.model import PRESETS, E2FormerLSR


def _where() -> str:
    frames = [f for f in traceback.extract_stack() if "openmmml_e2former" in f.filename]
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{frame.filename.split('openmmml_e2former/')[-1]}:{frame.lineno} {frame.line}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--local-only", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    system = system_for_size(args.size)
    config = PRESETS[args.preset]()
    if args.local_only:
        config = dataclasses.replace(config, num_long_layers=0)
    torch.manual_seed(0)
    network = E2FormerLSR(config).eval()
    atoms = list(system.topology.atoms())
    numbers = [atoms[i].element.atomic_number for i in system.ml_atoms]
    fragments = fragment_ids_from_topology(system.topology, system.ml_atoms)
    caps = cut_bonds(system.topology, system.ml_atoms) if not system.periodic else []
    module = OpenMMModule(network, numbers, fragments, 0.0, system.ml_atoms, caps, system.periodic)
    positions = torch.tensor(system.positions_nm, dtype=torch.float32)
    module.plan(positions)

    sizes: dict[int, int] = {}
    by_line: collections.Counter = collections.Counter()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in sizes:
            sizes[key] = storage.nbytes()
            by_line[_where()] += sizes[key]
        return tensor

    x = positions.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        energy = module(x, None)
    torch.autograd.grad(energy, x)
    total = sum(sizes.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    kind = "local-only" if args.local_only else "LSR"
    print(f"# {args.preset} {kind}, {system.n_atoms} atoms ({system.description}); {module.plan_summary()}")
    print(f"saved for the backward pass: {total / 2**30:.2f} GiB in {len(sizes)} storages")
    rows = by_line.most_common(args.rows)
    for line, nbytes in rows:
        print(f"{nbytes / 2**20:9.1f} MiB  {line}")
    print(f"peak RSS after energy + forces: {peak:.2f} GiB")
    if args.out:
        record = {
            "size": system.n_atoms,
            "preset": args.preset,
            "model": kind,
            "torch": torch.__version__,
            "saved_gib": total / 2**30,
            "peak_rss_gib": peak,
            "lines_mib": {line: nbytes / 2**20 for line, nbytes in rows},
        }
        with open(args.out, "w") as handle:
            json.dump(record, handle, indent=1)


if __name__ == "__main__":
    main()

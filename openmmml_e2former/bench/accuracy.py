"""``e2former bench accuracy``: force error vs system size for a local-only model at 5 Å, a
local-only model at a longer cutoff and E2Former-LSR, trained alike on the small members of the
size-scaling set (:mod:`openmmml_e2former.data.scaling`) and evaluated on every size.

Steps (each resumable): build the set if missing; train the three models (same data, seed and
number of epochs; runs in ``RUNS/<labels>-<model>``); evaluate every model on the evaluation
members (force MAE and energy MAE per atom, by size) and on the charged-pair decay curves
(interaction energy ``E(AB) - E(A) - E(B)`` against the reference's); time energy + forces of each
architecture on villin (582 atoms) and the 2,000-atom villin cluster; write JSON and plots.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import time
from pathlib import Path

import numpy as np

from .environments import environment_table, plot_environments, training_neighbours

#: the architectures compared (small_config() changes); same data, seed and epochs for all.
#: The first three are the paper's comparison; the last two are this project's answers to what
#: they miss: learned charges + Coulomb (model/electrostatics.py), and fragment weights that can
#: add up instead of averaging (long_attention="sigmoid").
MODELS = {
    "local-5A": {"num_long_layers": 0, "local_cutoff": 5.0},
    "local-8A": {"num_long_layers": 0, "local_cutoff": 8.0},
    "lsr-5A": {"local_cutoff": 5.0},
    "lsr-5A+coulomb": {"local_cutoff": 5.0, "electrostatics": "coulomb"},
    "lsr-5A-sigmoid": {"local_cutoff": 5.0, "long_attention": "sigmoid"},
}
#: size bins (atoms) for the error-vs-size table; a bin is reported when it holds structures
BIN_EDGES = (0, 80, 160, 320, 640, 1280, 2560)
#: the training runs load structures up to this size (the training members are <= SMALL_ATOMS)
MAX_TRAINING_ATOMS = 200
#: largest structure evaluated by default: the LSR model on the 2,664-atom water shell needs
#: ~14 GB (atoms x ~890 water fragments) through the OpenMM module, more than a 2-core, 24 GB
#: machine affords beside training runs; up to 2,100 atoms it stays under ~8 GB
MAX_EVAL_ATOMS = 2100
#: the decay-curve error is reported beyond this charge-centre distance (Å)
DECAY_BEYOND = 5.0
TRAINING = {
    "epochs": 6,
    "batch_size": 8,
    "lr": 5.0e-3,
    "warmup_steps": 50,
    "schedule": "cosine",
    "min_lr_ratio": 0.02,
    "energy_weight": 10.0,
    "force_weight": 10.0,
    "early_stopping_patience": 100,
    "checkpoint_every_steps": 100,
    "dtype": "float32",
    "device": "cpu",
    "num_threads": 1,
    "tensorboard": False,
}


def label_paths(set_dir: str, labels: str) -> list[str]:
    """Dataset files of one labelling of the set: ``oracle`` (AMBER14) or ``gfn2`` (folders of
    chunks written by ``e2former label run``, ``SET/gfn2/<family>``)."""
    root = os.path.join(set_dir, labels)
    if labels == "oracle":
        paths = sorted(str(p) for p in Path(root).glob("*.extxyz.gz"))
    else:
        paths = sorted(str(p) for p in Path(root).iterdir() if p.is_dir()) if os.path.isdir(root) else []
    if not paths:
        raise FileNotFoundError(f"no {labels} labels under {root}")
    return paths


def read_roles(set_dir: str) -> dict[str, str]:
    path = os.path.join(set_dir, "roles.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} is missing: build the set with `e2former bench scaling-set --out {set_dir}`"
        )
    with open(path) as handle:
        return json.load(handle)


def run_name(
    name: str, epochs: int | None = None, large: bool = False, init_epochs: int | None = None
) -> str:
    """The run's name (its folder is ``<labels>-<run name>``): ``<name>[-e<epochs>][-from-e<N>][+large]``."""
    longer = epochs is not None and epochs != TRAINING["epochs"]
    return (
        name
        + (f"-e{epochs}" if longer else "")
        + (f"-from-e{init_epochs}" if init_epochs else "")
        + ("+large" if large else "")
    )


_RUN_SUFFIX = re.compile(r"(-e\d+)?(-from-e\d+)?(\+large)?")


def model_of_run(name: str) -> str | None:
    """The model of :data:`MODELS` a run name (:func:`run_name`) was trained as; None for a name
    that is not a run of this benchmark (e.g. ``shipped``)."""
    for model in sorted(MODELS, key=len, reverse=True):
        if name.startswith(model) and _RUN_SUFFIX.fullmatch(name[len(model) :]):
            return model
    return None


def training_config(
    name: str,
    set_dir: str,
    labels: str,
    runs: str,
    quick: bool = False,
    seed: int = 0,
    epochs: int | None = None,
    large: bool = False,
    init_epochs: int | None = None,
) -> dict:
    """The training configuration of model ``name`` (one of :data:`MODELS`); writes the split
    (train/val ids present in this labelling) next to the run. ``epochs`` other than
    ``TRAINING["epochs"]`` trains in its own folder ``<labels>-<name>-e<epochs>``. ``large`` adds
    the ``train-large`` members (161-650 atoms; ``e2former bench scaling-set --train-large``) to the
    training side; ``init_epochs`` N starts from the best checkpoint of the run ``<name>-e<N>``."""
    from ..data.extxyz import read_structures
    from ..data.scaling import LARGE_TRAIN_ATOMS

    roles = read_roles(set_dir)
    paths = label_paths(set_dir, labels)
    max_atoms = LARGE_TRAIN_ATOMS if large else MAX_TRAINING_ATOMS
    present = {s.id for p in paths for s in read_structures(p) if s.num_atoms <= max_atoms}
    sides = {"train": ("train", "train-large") if large else ("train",), "val": ("val",)}
    split = {
        side: sorted(i for i, r in roles.items() if r in wanted and i in present)
        for side, wanted in sides.items()
    }
    if large and not any(roles.get(i) == "train-large" for i in split["train"]):
        raise FileNotFoundError(
            f"no train-large members in {set_dir}: e2former bench scaling-set --train-large 30"
        )
    # every other loaded structure (held-out frames, decay curves; train-large ones when they do
    # not train) is the trainer's test side: the trainer wants every loaded structure on a side
    taken = set(split["train"]) | set(split["val"])
    split["test"] = sorted(i for i in roles if i not in taken and i in present)
    longer = epochs is not None and epochs != TRAINING["epochs"]
    output = os.path.join(runs, f"{labels}-{run_name(name, epochs, large, init_epochs)}")
    os.makedirs(output, exist_ok=True)
    split_file = os.path.join(runs, f"{labels}-split{'-large' if large else ''}.json")
    tmp = f"{split_file}.tmp-{os.getpid()}"  # two training processes may write it at once
    with open(tmp, "w") as handle:
        json.dump(split, handle)
    os.replace(tmp, split_file)
    training = dict(TRAINING, output=output, seed=seed, progress=False)
    if longer:
        training["epochs"] = int(epochs)
    if quick:
        training.update(epochs=1, max_steps_per_epoch=3, warmup_steps=1, checkpoint_every_steps=10)
    model = {"preset": "small", "overrides": dict(MODELS[name])}
    if init_epochs:
        start = os.path.join(runs, f"{labels}-{run_name(name, init_epochs)}", "best.pt")
        if not os.path.exists(start):
            raise FileNotFoundError(f"{start} is missing: train {name} for {init_epochs} epochs first")
        model.update(init_from=start, refit_reference_energies=False)
    return {
        "data": {"paths": paths, "split_file": split_file, "max_atoms": max_atoms},
        "model": model,
        "training": training,
    }


def train_models(
    set_dir: str,
    labels: str,
    runs: str,
    names,
    quick: bool = False,
    seed: int = 0,
    log=print,
    epochs: int | None = None,
    large: bool = False,
    init_epochs: int | None = None,
) -> dict:
    """Train each model unless its run finished (``final.json``); returns {run name: best.pt path}
    (:func:`run_name`)."""
    from ..train.config import merge_config
    from ..train.run import run_training

    out = {}
    for name in names:
        config = training_config(name, set_dir, labels, runs, quick, seed, epochs, large, init_epochs)
        config = merge_config(config)
        output = config["training"]["output"]
        if not os.path.exists(os.path.join(output, "final.json")):
            log(f"training {name} on {labels} labels -> {output}")
            start = time.time()
            run_training(config)
            log(f"{name}: trained in {time.time() - start:.0f} s")
        out[run_name(name, epochs, large, init_epochs)] = os.path.join(output, "best.pt")
    return out


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------


def family_of(structure_id: str) -> str:
    head = structure_id.split(":", 1)[0]
    if head.endswith("-seg"):
        return "segments"
    if head.endswith("-sphere"):
        return "spheres"
    return {"pair": "pairs", "shell": "shells"}.get(head, head)


def predictions(checkpoint: str, structures, threads: int = 1) -> dict[str, tuple[float, np.ndarray]]:
    """{id: (energy eV, forces eV/Å)} of a checkpoint on ``structures``, one structure per call
    (sizes differ by orders of magnitude) through the module OpenMM runs (``export.OpenMMModule``:
    static graphs, float32) -- the production path, and far leaner in memory than the training
    path at 2,000 atoms."""
    import torch

    from ..checkpoints import load_checkpoint
    from ..export import OpenMMModule
    from ..units import ANGSTROM_PER_NM, KJ_PER_MOL_TO_EV

    torch.set_num_threads(threads)
    model, _ = load_checkpoint(checkpoint)
    model = model.float()
    out = {}
    for s in structures:
        module = OpenMMModule(
            model, list(s.numbers), list(s.fragment_ids), float(s.charge), dtype=torch.float32
        )
        positions = torch.tensor(s.positions / ANGSTROM_PER_NM, dtype=torch.float32, requires_grad=True)
        energy = module(positions)
        (gradient,) = torch.autograd.grad(energy, positions)
        forces = -gradient.double().numpy() * KJ_PER_MOL_TO_EV / ANGSTROM_PER_NM
        out[s.id] = (float(energy.detach()) * KJ_PER_MOL_TO_EV, forces)
        del module, energy, gradient
    return out


def cached_predictions(cache: str, checkpoint: str, structures, threads: int = 1) -> dict:
    """:func:`predictions`, kept in ``cache`` (a pickle keyed by the checkpoint's SHA-256) so an
    evaluation can run while other models still train, and a rerun only predicts what is new."""
    import pickle

    from ..checkpoints import file_sha256

    sha = file_sha256(checkpoint)
    stored: dict = {}
    if os.path.exists(cache):
        with open(cache, "rb") as handle:
            payload = pickle.load(handle)
        if payload.get("checkpoint_sha256") == sha:
            stored = payload["predicted"]
    missing = [s for s in structures if s.id not in stored]
    if missing:
        stored.update(predictions(checkpoint, missing, threads))
        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        tmp = f"{cache}.tmp-{os.getpid()}"
        with open(tmp, "wb") as handle:
            pickle.dump({"checkpoint_sha256": sha, "predicted": stored}, handle)
        os.replace(tmp, cache)
    return {s.id: stored[s.id] for s in structures}


def trained_on_set(checkpoint: str, set_dir: str) -> bool:
    """Whether every training data path in the checkpoint's metadata lies inside ``set_dir``."""
    from ..checkpoints import load_checkpoint

    paths = load_checkpoint(checkpoint)[1].get("data") or []
    root = os.path.abspath(set_dir)
    return bool(paths) and all(os.path.abspath(p).startswith(root + os.sep) for p in paths)


def coherent_force_mae(errors: np.ndarray, fragment_ids) -> float:
    """Mean |component| of each fragment's mean force error (``errors`` [N, 3], eV/Å): the part
    of the error that pushes a whole residue (or water) one way, as a missing field does on a
    charged one, while errors that change sign within a fragment cancel. Fragments of one atom count as
    their atom. Its floor for uncorrelated errors falls as 1/sqrt(atoms per fragment), which is
    alike at every size of a protein piece; growth with size is what it is for."""
    ids = np.unique(np.asarray(fragment_ids), return_inverse=True)[1]
    counts = np.bincount(ids)
    means = np.stack([np.bincount(ids, weights=errors[:, k]) for k in range(3)], axis=1) / counts[:, None]
    return float(np.abs(means).mean())


def error_rows(structures, predicted: dict) -> list[dict]:
    rows = []
    for s in structures:
        energy, forces = predicted[s.id]
        errors = np.asarray(forces) - np.asarray(s.forces)
        rows.append(
            {
                "id": s.id,
                "family": family_of(s.id),
                "atoms": int(s.num_atoms),
                "charge": int(s.charge),
                "force_mae": float(np.abs(errors).mean()),
                "coherent_force_mae": coherent_force_mae(errors, s.fragment_ids),
                "energy_error_per_atom": float((energy - s.energy) / s.num_atoms),
            }
        )
    return rows


def size_bins(rows: list[dict]):
    """(label, rows) of each :data:`BIN_EDGES` size bin that holds rows (by ``row["atoms"]``)."""
    for lo, hi in zip(BIN_EDGES, BIN_EDGES[1:], strict=False):
        inside = [r for r in rows if lo < r["atoms"] <= hi]
        if inside:
            yield f"{lo + 1}-{hi}", inside


def size_table(rows: list[dict]) -> list[dict]:
    """Per size bin: structures, mean atoms, force MAE (mean over structures), its coherent part
    (:func:`coherent_force_mae`, where the rows have it), energy MAE/atom."""
    table = []
    for label, inside in size_bins(rows):
        entry = {
            "bin": label,
            "structures": len(inside),
            "mean_atoms": float(np.mean([r["atoms"] for r in inside])),
            "force_mae": float(np.mean([r["force_mae"] for r in inside])),
            "energy_mae_per_atom": float(np.mean([abs(r["energy_error_per_atom"]) for r in inside])),
        }
        if all("coherent_force_mae" in r for r in inside):
            entry["coherent_force_mae"] = float(np.mean([r["coherent_force_mae"] for r in inside]))
        table.append(entry)
    return table


#: net-charge groups (|total charge|) of the protein members: the training members reach |q| = 3
CHARGE_GROUPS = {"|q| <= 1": (0, 1), "|q| 2-3": (2, 3), "|q| >= 4": (4, 10_000)}


def charge_table(rows: list[dict]) -> dict:
    """Force MAE by size bin within each :data:`CHARGE_GROUPS` group of the protein members
    (segments and spheres): large pieces cut around charged residues carry larger net charges, so
    growth with size can be growth with charge."""
    protein = [r for r in rows if r["family"] in ("segments", "spheres")]
    out = {}
    for name, (lo, hi) in CHARGE_GROUPS.items():
        inside = [r for r in protein if lo <= abs(r["charge"]) <= hi]
        if inside:
            out[name] = scaling_summary(inside)
    return out


def far_field_bins(rows: list[dict]) -> list[dict]:
    """Rows of :func:`.far_field.far_field_table` per size bin: mean over structures of the
    oracle force and of each radius's far-field force."""
    return [
        {
            "bin": label,
            "structures": len(inside),
            "mean_atoms": float(np.mean([r["atoms"] for r in inside])),
            "force_mean_abs": float(np.mean([r["force_mean_abs"] for r in inside])),
            "far_mean_abs": {
                k: float(np.mean([r["far_mean_abs"][k] for r in inside])) for k in inside[0]["far_mean_abs"]
            },
        }
        for label, inside in size_bins(rows)
    ]


def scaling_summary(rows: list[dict]) -> dict:
    """Force MAE at the smallest and largest size bins, their ratio and the fitted exponent of
    force MAE vs atoms (log-log slope over structures)."""
    from .speed import fit_exponent

    table = size_table(rows)
    if not table:
        return {"bins": []}
    first, last = table[0], table[-1]
    return {
        "bins": table,
        "smallest": first,
        "largest": last,
        "ratio_largest_to_smallest": last["force_mae"] / first["force_mae"],
        "exponent": fit_exponent([r["atoms"] for r in rows], [r["force_mae"] for r in rows]),
    }


def decay_curves(structures, predicted: dict[str, dict]) -> list[dict]:
    """Per charged pair: distances, reference interaction energies and each model's (eV), and
    each model's MAE beyond :data:`DECAY_BEYOND` Å (meV)."""
    by_id = {s.id: s for s in structures}
    curves = []
    pairs = sorted({i.split("/")[0] for i in by_id if i.startswith("pair:") and "/curve/" in i})
    for pair in pairs:
        mono = [f"{pair}/monomer-A", f"{pair}/monomer-B"]
        if not all(m in by_id for m in mono):
            continue
        points = sorted((float(i.rsplit("/d", 1)[1]), i) for i in by_id if i.startswith(pair + "/curve/"))
        ref_mono = sum(by_id[m].energy for m in mono)
        curve = {
            "pair": pair.split(":", 1)[1],
            "distance": [d for d, _ in points],
            "reference": [by_id[i].energy - ref_mono for _, i in points],
            "models": {},
        }
        for model, pred in predicted.items():
            if not all(i in pred for _, i in points) or not all(m in pred for m in mono):
                continue
            model_mono = sum(pred[m][0] for m in mono)
            values = [pred[i][0] - model_mono for _, i in points]
            far = [
                abs(v - r)
                for v, r, d in zip(values, curve["reference"], curve["distance"], strict=True)
                if d > DECAY_BEYOND
            ]
            # the tail's shape alone: each curve relative to its farthest point, which removes
            # the monomers' energies (and their errors) from the comparison
            tail = [
                abs((v - values[-1]) - (r - curve["reference"][-1]))
                for v, r, d in zip(values, curve["reference"], curve["distance"], strict=True)
                if d > DECAY_BEYOND
            ]
            curve["models"][model] = {
                "interaction": values,
                "mae_beyond_meV": 1000 * float(np.mean(far)) if far else None,
                "tail_shape_mae_beyond_meV": 1000 * float(np.mean(tail)) if tail else None,
            }
        curves.append(curve)
    return curves


def time_architecture(checkpoint: str, sizes=(582, 2000), repeats: int = 3, threads: int = 2) -> dict:
    """Median seconds of energy + forces (float32, CPU) of the exported module on the villin
    benchmark systems (:mod:`.systems`), after one warm-up call."""
    import torch

    from ..checkpoints import load_checkpoint
    from ..export import OpenMMModule, cut_bonds
    from ..fragments import fragment_ids_from_topology
    from .systems import system_for_size

    torch.set_num_threads(threads)
    network, _ = load_checkpoint(checkpoint)
    out = {}
    for n in sizes:
        system = system_for_size(n)
        atoms = list(system.topology.atoms())
        numbers = [atoms[i].element.atomic_number for i in system.ml_atoms]
        fragments = fragment_ids_from_topology(system.topology, system.ml_atoms)
        caps = cut_bonds(system.topology, system.ml_atoms)
        module = OpenMMModule(
            network.float(), numbers, fragments, 0.0, system.ml_atoms, caps, False, torch.float32
        )
        positions = torch.tensor(system.positions_nm, dtype=torch.float32)
        times = []
        for k in range(repeats + 1):
            p = positions.clone().requires_grad_(True)
            t0 = time.perf_counter()
            energy = module(p)
            torch.autograd.grad(energy, p)
            if k:
                times.append(time.perf_counter() - t0)
        out[str(n)] = statistics.median(times)
    return out


def run(args) -> dict:
    from ..data.extxyz import read_structures
    from ..data.scaling import build_scaling_set

    set_dir = args.set
    if not os.path.exists(os.path.join(set_dir, "roles.json")) or args.quick:
        build_scaling_set(set_dir, quick=args.quick, seed=args.seed)
    roles = read_roles(set_dir)
    checkpoints = train_models(
        set_dir, args.labels, args.runs, args.train, args.quick, args.seed, epochs=args.epochs,
        large=args.train_large, init_epochs=args.init_epochs,
    )  # fmt: skip
    if args.train_only:
        return {}
    for spec in args.models or []:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--models takes NAME=CHECKPOINT, not {spec!r}")
        checkpoints[name] = path
    wanted = ("eval", "curve", "monomer")
    structures = [
        s
        for p in label_paths(set_dir, args.labels)
        for s in read_structures(p)
        if roles.get(s.id) in wanted and s.num_atoms <= args.max_atoms
    ]
    evaluated = [s for s in structures if roles[s.id] == "eval"]
    family_by_id = {s.id: family_of(s.id) for s in evaluated}
    # the set's training members, labelled or not (their positions are the same under any labels)
    members = [s for p in label_paths(set_dir, "oracle") for s in read_structures(p)]
    training = training_neighbours([s for s in members if roles.get(s.id) == "train"])
    result = {
        "labels": args.labels,
        "set": set_dir,
        "commands": {"this": "e2former bench accuracy " + " ".join(args.argv)},
        "training": {name: MODELS.get(model_of_run(name) or "") for name in checkpoints},
        "seed": args.seed,
        "max_atoms": args.max_atoms,
        "quick": bool(args.quick),
        "models": {},
    }
    predicted_all = {}
    for name, path in checkpoints.items():
        print(f"evaluating {name} on {len(structures)} structures", flush=True)
        cache = os.path.join(args.runs, "predictions", f"{args.labels}-{name}.pkl")
        predicted = cached_predictions(cache, path, structures, args.threads)
        predicted_all[name] = predicted
        rows = error_rows(evaluated, predicted)
        families = sorted({r["family"] for r in rows})
        entry = {
            "checkpoint": path,
            "overall": scaling_summary(rows),
            "families": {f: scaling_summary([r for r in rows if r["family"] == f]) for f in families},
            "structures": rows,
            # the training range is the set's training members' for models trained on this set
            "environments": environment_table(
                evaluated, predicted, family_by_id, training if trained_on_set(path, set_dir) else None
            ),
            "by_charge": charge_table(rows),
        }
        if not args.no_speed:
            entry["seconds_energy_forces"] = time_architecture(path, args.speed_sizes, threads=args.threads)
        result["models"][name] = entry
    result["decay_curves"] = decay_curves(structures, predicted_all)
    if args.labels == "oracle":
        result["far_field"] = far_field_summary(set_dir, evaluated, args.quick, args.seed, predicted_all)
    return result


def far_field_summary(set_dir: str, evaluated, quick: bool, seed: int, predicted=None) -> dict:
    """The oracle's force from beyond each receptive radius, by size bin, for the protein
    families and all of them together, and per model and bin the fraction of it the model leaves
    out (:mod:`.far_field`)."""
    from .far_field import far_field_table

    table = far_field_table(set_dir, evaluated, quick=quick, seed=seed, predicted=predicted)
    rows = table["structures"]
    families = sorted({family_of(sid) for sid in rows})
    out = {
        "radii": table["radii"],
        "bins": far_field_bins(list(rows.values())),
        "families": {f: far_field_bins([r for i, r in rows.items() if family_of(i) == f]) for f in families},
        "structures": rows,
    }
    if predicted:
        out["missed_fraction"] = {name: missed_fraction_bins(list(rows.values()), name) for name in predicted}
        names = list(predicted)
        out["paired_difference"] = {
            f"{a} - {b}": paired_difference_bins(list(rows.values()), a, b)
            for i, a in enumerate(names)
            for b in names[i + 1 :]
        }
    return out


def _far_field_bins(rows: list[dict], model: str, compute):
    """(label, structures, {radius: value}, {radius: standard error}) per size bin, ``compute``
    taking a bin's rows and a radius (the radii are those of ``model``'s terms)."""
    for label, inside in size_bins(rows):
        values, errors = {}, {}
        for radius in inside[0]["missed"][model]:
            values[radius], errors[radius] = compute(inside, radius)
        yield label, len(inside), values, errors


def missed_fraction_bins(rows: list[dict], model: str) -> list[dict]:
    """Per size bin and radius: the fraction of the oracle's far field that ``model`` leaves out
    (:func:`.far_field.missed_fraction`, summed over the bin's structures; None where the bin has
    no far field)."""
    from .far_field import fraction_and_error

    def compute(inside, radius):
        return fraction_and_error([r["missed"][model][radius] for r in inside])

    return [
        {"bin": label, "structures": n, "missed_fraction": values, "standard_error": errors}
        for label, n, values, errors in _far_field_bins(rows, model, compute)
    ]


def paired_difference_bins(rows: list[dict], model_a: str, model_b: str) -> list[dict]:
    """Per size bin and radius: how much more of the oracle's far field ``model_a`` leaves out
    than ``model_b`` on the same structures, with its paired standard error
    (:func:`.far_field.paired_difference`; None where the bin has no far field)."""
    from .far_field import paired_difference

    def compute(inside, radius):
        return paired_difference(
            [r["missed"][model_a][radius] for r in inside], [r["missed"][model_b][radius] for r in inside]
        )

    return [
        {"bin": label, "structures": n, "difference": values, "standard_error": errors}
        for label, n, values, errors in _far_field_bins(rows, model_a, compute)
    ]


def report(result: dict) -> None:
    print(f"\nforce MAE (eV/Å) by size, {result['labels']} labels")
    for name, entry in result["models"].items():
        overall = entry["overall"]
        if not overall.get("bins"):
            continue
        cells = "  ".join(f"{b['bin']}: {b['force_mae']:.4f}" for b in overall["bins"])
        exponent = overall["exponent"]
        print(
            f"  {name:<10} {cells}  largest/smallest {overall['ratio_largest_to_smallest']:.2f}"
            + (f"  exponent {exponent:+.3f}" if exponent is not None else "")
        )
        if "seconds_energy_forces" in entry:
            print(
                "  "
                + " " * 10
                + " time "
                + ", ".join(f"{n} atoms {t:.3f} s" for n, t in entry["seconds_energy_forces"].items())
            )
        if all("coherent_force_mae" in b for b in overall["bins"]):
            cells = "  ".join(f"{b['bin']}: {b['coherent_force_mae']:.4f}" for b in overall["bins"])
            print(f"  {'':<10} coherent part (fragment-mean error): {cells}")
        for group, summary in (entry.get("by_charge") or {}).items():
            bins = summary["bins"]
            cells = "  ".join(f"{b['bin']}: {b['force_mae']:.4f} ({b['structures']})" for b in bins)
            print(f"  {'':<10} segments + spheres, {group}: {cells}")
        for family, groups in (entry.get("environments") or {}).get("families", {}).items():
            small, large = groups.get("small"), groups.get("large")
            if not (small and large):
                continue
            line = f"  {'':<10} {family}: per-atom MAE small {small['force_mae']:.4f}"
            line += f", large {large['force_mae']:.4f}"
            within, beyond = large["force_mae_within_training"], large["force_mae_beyond_training"]
            if within is not None and beyond is not None:
                share = 100 * large["fraction_beyond_training"]
                line += f" (atoms as crowded as training atoms {within:.4f}"
                line += f", more crowded {beyond:.4f}: {share:.0f} %)"
            print(line)
    far = result.get("far_field")
    if far and far["bins"]:
        print("  oracle force from beyond R (mean |component|, eV/Å), segments + spheres:")
        for radius in far["bins"][0]["far_mean_abs"]:
            cells = "  ".join(f"{b['bin']}: {b['far_mean_abs'][radius]:.4f}" for b in far["bins"])
            print(f"    R = {radius:>2} Å  {cells}")
        for name, bins in (far.get("missed_fraction") or {}).items():
            for radius in ("10", "15", "20"):
                cells = "  ".join(
                    f"{b['bin']}: {b['missed_fraction'][radius]:.2f} ± {b['standard_error'][radius]:.2f}"
                    for b in bins
                    if b["missed_fraction"].get(radius) is not None
                )
                print(f"    {name}: fraction of the force from beyond {radius} Å left out  {cells}")
        for pair, bins in (far.get("paired_difference") or {}).items():
            for radius in ("10", "15"):
                cells = "  ".join(
                    f"{b['bin']}: {b['difference'][radius]:+.2f} ± {b['standard_error'][radius]:.2f}"
                    for b in bins
                    if b["difference"].get(radius) is not None
                )
                print(f"    {pair} (paired): difference in the share left out beyond {radius} Å  {cells}")
    for curve in result["decay_curves"]:
        cells = ", ".join(
            f"{m} {v['mae_beyond_meV']:.1f}"
            for m, v in curve["models"].items()
            if v["mae_beyond_meV"] is not None
        )
        print(f"  decay {curve['pair']}: interaction-energy MAE beyond {DECAY_BEYOND:g} Å (meV): {cells}")
        shape = ", ".join(
            f"{m} {v['tail_shape_mae_beyond_meV']:.1f}"
            for m, v in curve["models"].items()
            if v.get("tail_shape_mae_beyond_meV") is not None
        )
        print(f"    the same relative to the farthest point (tail shape, no monomers): {shape}")


def plot(result: dict, path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    families = sorted({f for e in result["models"].values() for f in e["families"]})
    curves = result["decay_curves"]
    cols = max(len(families), len(curves), 1)
    cols = max(cols, 3)
    fig, axes = plt.subplots(3, cols, figsize=(4.2 * cols, 11.0), squeeze=False)
    colours = dict(zip(result["models"], plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for ax, family in zip(axes[0], families, strict=False):
        any_coherent = False
        for name, entry in result["models"].items():
            rows = [r for r in entry["structures"] if r["family"] == family]
            if not rows:
                continue
            ax.scatter(
                [r["atoms"] for r in rows],
                [r["force_mae"] for r in rows],
                s=9,
                alpha=0.5,
                color=colours[name],
            )
            bins = entry["families"][family]["bins"]
            exp = entry["families"][family].get("exponent")
            label = name + (f" (slope {exp:+.2f})" if exp is not None else "")
            ax.plot(
                [b["mean_atoms"] for b in bins],
                [b["force_mae"] for b in bins],
                "-o",
                color=colours[name],
                label=label,
            )
            coherent = [(b["mean_atoms"], b["coherent_force_mae"]) for b in bins if "coherent_force_mae" in b]
            if coherent:
                ax.plot(*zip(*coherent, strict=True), "-.", color=colours[name], lw=1)
                any_coherent = True
        if any_coherent:
            ax.plot([], [], "-.", color="black", lw=1, label="dash-dot: coherent part (fragment mean)")
        _far_field_lines(ax, (result.get("far_field") or {}).get("families", {}).get(family))
        ax.set(xscale="log", yscale="log", xlabel="atoms", ylabel="force MAE (eV/Å)", title=family)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded minor labels
        ax.legend(fontsize=7)
    for ax, curve in zip(axes[1], curves, strict=False):
        ax.plot(curve["distance"], curve["reference"], "k-", lw=2, label="reference")
        for name, values in curve["models"].items():
            ax.plot(curve["distance"], values["interaction"], "--", color=colours.get(name), label=name)
        ax.axvline(DECAY_BEYOND, color="grey", lw=0.5)
        ax.set(xlabel="charge-centre distance (Å)", ylabel="interaction energy (eV)", title=curve["pair"])
        ax.legend(fontsize=7)
    _summary_row(axes[2], result, colours)
    for ax in list(axes[0][len(families) :]) + list(axes[1][len(curves) :]) + list(axes[2][3:]):
        ax.axis("off")
    fig.suptitle(f"size scaling and decay curves ({result['labels']} labels)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _far_field_lines(ax, bins) -> None:
    """Grey lines: the oracle's force from beyond 5 and 15 Å (what one 5 Å hop, and three, miss)."""
    if not bins:
        return
    for radius, style in (("5", ":"), ("15", "--")):
        points = [(b["mean_atoms"], b["far_mean_abs"].get(radius, 0.0)) for b in bins]
        points = [p for p in points if p[1] > 0]
        if points:
            label = f"oracle force from beyond {radius} Å"
            ax.plot(*zip(*points, strict=True), style, color="grey", label=label)


def _summary_row(axes, result: dict, colours: dict) -> None:
    """All families together: force MAE and energy MAE per atom by size bin, and accuracy vs
    cost (force MAE of the largest bin against seconds of energy + forces)."""
    for name, entry in result["models"].items():
        bins = entry["overall"].get("bins") or []
        atoms = [b["mean_atoms"] for b in bins]
        axes[0].plot(atoms, [b["force_mae"] for b in bins], "-o", color=colours[name], label=name)
        energies = [1000 * b["energy_mae_per_atom"] for b in bins]
        axes[1].plot(atoms, energies, "-o", color=colours[name], label=name)
        seconds = entry.get("seconds_energy_forces") or {}
        if bins and seconds:
            size = max(seconds, key=int)
            axes[2].scatter(seconds[size], bins[-1]["force_mae"], color=colours[name], s=40, label=name)
            axes[2].set_xlabel(f"seconds, energy + forces, {size} atoms (CPU)")
    log = {"xscale": "log", "yscale": "log", "xlabel": "atoms", "title": "all families"}
    axes[0].set(ylabel="force MAE (eV/Å)", **log)
    axes[1].set(ylabel="energy MAE (meV/atom)", **log)
    axes[2].set(ylabel="force MAE, largest bin (eV/Å)", title="accuracy vs cost")
    if not axes[2].collections:
        axes[2].text(
            0.5, 0.5, "no timings in this run", ha="center", va="center", transform=axes[2].transAxes
        )
    for ax in axes[:3]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", default="datasets/scaling", help="the size-scaling set folder (built if missing)"
    )
    parser.add_argument("--labels", choices=("oracle", "gfn2"), default="oracle")
    parser.add_argument("--runs", default="runs/accuracy", help="training runs folder")
    parser.add_argument(
        "--train", nargs="*", choices=list(MODELS), default=list(MODELS), help="models to train"
    )
    parser.add_argument(
        "--models", nargs="*", metavar="NAME=CHECKPOINT", help="extra checkpoints to evaluate"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny set and 3 training steps (output format check)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"train this many epochs (default {TRAINING['epochs']}); another number trains in "
        "its own run folder <labels>-<model>-e<N>, so converged and short runs sit side by side",
    )
    parser.add_argument(
        "--train-large",
        action="store_true",
        help="add the train-large members (161-650 atoms; e2former bench scaling-set --train-large N) to "
        "the training side; runs are named <model>...+large",
    )
    parser.add_argument(
        "--init-epochs",
        type=int,
        default=None,
        help="start each model from its own <labels>-<model>-e<N> run's best checkpoint (a fine-tune; "
        "with --train-large: before/after adding the large members, from the same start)",
    )
    parser.add_argument("--no-speed", action="store_true", help="skip timing the architectures")
    parser.add_argument(
        "--train-only", action="store_true", help="train (e.g. some models per process), do not evaluate"
    )
    parser.add_argument(
        "--max-atoms",
        type=int,
        default=MAX_EVAL_ATOMS,
        help=f"evaluate structures up to this size (default {MAX_EVAL_ATOMS}: memory, see docs/accuracy.md)",
    )
    parser.add_argument("--speed-sizes", nargs="+", type=int, default=[582, 2000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=None, help="JSON path (default: benchmarks/results/accuracy_<labels>.json)"
    )
    parser.add_argument("--plot", default=None, help="PNG path (default: the JSON path with .png)")


def main_from_args(args, argv=None) -> int:
    args.argv = list(argv or [])
    if args.quick:
        args.speed_sizes = [100]
    result = run(args)
    if args.train_only:
        return 0
    out = args.out or f"benchmarks/results/accuracy_{args.labels}{'_quick' if args.quick else ''}.json"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as handle:
        json.dump(
            result, handle, indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v
        )
    report(result)
    png = plot(result, args.plot or os.path.splitext(out)[0] + ".png")
    crowding = plot_environments(result, os.path.splitext(args.plot or out)[0] + "_environments.png")
    print(f"\nwrote {out}" + "".join(f" and {p}" for p in (png, crowding) if p))
    return 0

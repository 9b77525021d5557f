"""Training configuration (YAML): every key, its default and its unit.

```yaml
data:
  paths: [datasets/gfn2-peptides.extxyz.gz]   # files or folders of *.extxyz[.gz]
  split: [0.8, 0.1, 0.1]                        # train/val/test fractions, by molecule
  split_seed: 0
  split_file: null                              # or a JSON {"train": ids, "val": ids, "test": ids}
  max_atoms: null                               # drop structures larger than this
  repeat: {}                                    # {path: n}: that file's training structures n times per epoch
model:
  preset: small                                 # small | paper | fixture
  overrides: {}                                 # any E2FormerConfig field
  init_from: null                               # checkpoint to fine-tune from
  refit_reference_energies: true                # least-squares per-element energies
training:
  output: runs/train                            # checkpoints, CSV log, splits, final table
  seed: 0
  epochs: 100
  batch_size: 8                                 # structures per optimiser step (all processes)
  lr: 2.0e-3
  weight_decay: 1.0e-5
  warmup_steps: 100
  schedule: cosine                              # cosine | plateau | constant
  min_lr_ratio: 0.01
  plateau_patience: 3
  plateau_factor: 0.5
  energy_weight: 1.0                            # on (dE per atom)^2, eV^2
  force_weight: 10.0                            # on (dF component)^2, (eV/Å)^2
  ema_decay: 0.99
  grad_clip: 10.0
  early_stopping_patience: 20                   # epochs without validation improvement
  checkpoint_every_steps: 200                   # also at every epoch end and on SIGINT/SIGTERM
  max_steps_per_epoch: null
  max_train_seconds: null                       # stop (with checkpoint) after this wall time
  dtype: float32
  device: auto                                  # auto (a GPU per process when CUDA is present) | cpu | cuda
  num_threads: 1
  progress: true
  tensorboard: auto                             # auto | true | false (scalars in output/tensorboard)
```
"""

from __future__ import annotations

import copy
import os

from .tblog import parse_mode

DEFAULTS = {
    "data": {
        "paths": [],
        "split": [0.8, 0.1, 0.1],
        "split_seed": 0,
        "split_file": None,
        "max_atoms": None,
        "repeat": {},
    },
    "model": {"preset": "small", "overrides": {}, "init_from": None, "refit_reference_energies": True},
    "training": {
        "output": "runs/train",
        "seed": 0,
        "epochs": 100,
        "batch_size": 8,
        "lr": 2.0e-3,
        "weight_decay": 1.0e-5,
        "warmup_steps": 100,
        "schedule": "cosine",
        "min_lr_ratio": 0.01,
        "plateau_patience": 3,
        "plateau_factor": 0.5,
        "energy_weight": 1.0,
        "force_weight": 10.0,
        "ema_decay": 0.99,
        "grad_clip": 10.0,
        "early_stopping_patience": 20,
        "checkpoint_every_steps": 200,
        "max_steps_per_epoch": None,
        "max_train_seconds": None,
        "dtype": "float32",
        "device": "auto",
        "num_threads": 1,
        "progress": True,
        "tensorboard": "auto",
    },
}


def merge_config(user: dict) -> dict:
    """DEFAULTS updated by ``user``; unknown sections or keys raise a ValueError naming them."""
    config = copy.deepcopy(DEFAULTS)
    for section, values in (user or {}).items():
        if section not in config:
            raise ValueError(f"unknown config section {section!r}; known: {sorted(config)}")
        if not isinstance(values, dict):
            raise ValueError(f"config section {section!r} must be a mapping")
        unknown = sorted(set(values) - set(config[section]))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in config section {section!r}")
        config[section].update(values)
    t = config["training"]
    if t["schedule"] not in ("cosine", "plateau", "constant"):
        raise ValueError(f"training.schedule must be cosine, plateau or constant, not {t['schedule']!r}")
    if t["dtype"] not in ("float32", "float64"):
        raise ValueError("training.dtype must be float32 or float64")
    parse_mode(t["tensorboard"])
    if str(t["device"]).strip().lower() not in ("auto", "cpu", "cuda"):
        raise ValueError(f"training.device must be auto, cpu or cuda, not {t['device']!r}")
    if not config["data"]["paths"]:
        raise ValueError("data.paths is empty: give at least one dataset file or folder")
    _check_repeat(config["data"])
    return config


def _check_repeat(data: dict) -> None:
    """``data.repeat`` maps paths listed in ``data.paths`` to whole numbers >= 1."""
    repeat = data["repeat"] or {}
    if not isinstance(repeat, dict):
        raise ValueError("data.repeat must be a mapping {path: times}")
    for path, times in repeat.items():
        if path not in data["paths"]:
            raise ValueError(f"data.repeat names {path!r}, which is not one of data.paths {data['paths']}")
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"data.repeat[{path!r}] must be a whole number >= 1, not {times!r}")


def load_config(path: str) -> dict:
    """Read a YAML training config; relative data/output paths are kept relative to the cwd."""
    import yaml

    if not os.path.exists(path):
        raise FileNotFoundError(f"training config not found: {path}")
    with open(path) as handle:
        try:
            user = yaml.safe_load(handle) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    return merge_config(user)

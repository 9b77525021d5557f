"""The trainer behind ``e2former train CONFIG``.

Energy + force loss, per-element reference energies by least squares, AdamW, warm-up + cosine (or
plateau) learning rate, EMA weights, gradient clipping, checkpoints every epoch / every N steps /
on SIGINT or SIGTERM, exact resume, early stopping, CSV logs (+ TensorBoard scalars when installed)
and a final table by system size.
Data parallel over processes with ``torch.distributed`` (``torchrun``; gloo on CPU, nccl on GPU):
every process takes a slice of each global batch and gradients are summed across processes, with
losses normalised by global counts, so N processes compute the same step as one.

Files in ``training.output``: ``last.pt`` (full training state), ``best.pt`` (EMA weights of the
best validation epoch, our checkpoint format), ``splits.json``, ``epochs.csv``, ``steps.csv``,
``final.json``, ``final_table.md`` and ``tensorboard/`` (event files, see :mod:`.tblog`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import time
import warnings

import numpy as np
import torch

from ..checkpoints import build_model, load_checkpoint, save_checkpoint
from ..model import E2FormerLSR
from ..model.config import PRESETS
from .batching import fit_reference_energies, predict
from .data import idle_repeats, load_samples, make_split, training_pool
from .ddp import resolve_device
from .metrics import ErrorAccumulator, format_table
from .tblog import TensorBoardLog

STATE_VERSION = 1


class Trainer:
    """Set up from a merged config (:func:`~openmmml_e2former.train.config.merge_config`)."""

    def __init__(self, config: dict, rank: int = 0, world_size: int = 1):
        self.config = config
        self.t = config["training"]
        self.rank, self.world_size = rank, world_size
        self.output = self.t["output"]
        self.dtype = torch.float64 if self.t["dtype"] == "float64" else torch.float32
        self.stop_requested = False
        torch.set_num_threads(int(self.t["num_threads"]))
        torch.manual_seed(self.t["seed"])
        self.device = resolve_device(self.t["device"], rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self._load_data()
        self._build_model()
        self.split = {side: [s.to(self.device) for s in samples] for side, samples in self.split.items()}
        self.pool = self._training_pool()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.t["lr"], weight_decay=self.t["weight_decay"]
        )
        self.ema = self._copy_model(self.model)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.epoch_losses: list[float] = []  # this epoch's step losses so far (kept in last.pt)
        self.best_val = math.inf
        self.bad_epochs = 0
        self.plateau_scale = 1.0
        self.history: list[dict] = []
        self.start_time = time.time()
        self.elapsed_before = 0.0  # wall seconds of earlier pieces of a resumed run
        if os.path.exists(os.path.join(self.output, "last.pt")):
            self._resume()
        folder = os.path.join(self.output, "tensorboard") if rank == 0 else None
        self.tensorboard = TensorBoardLog(folder, self.t["tensorboard"], self.step)

    # --- setup -----------------------------------------------------------------------------
    def _load_data(self) -> None:
        data = self.config["data"]
        samples, summary = load_samples(data["paths"], data.get("max_atoms"), self.dtype)
        if self.rank == 0:
            os.makedirs(self.output, exist_ok=True)
        self._barrier()
        self.split = make_split(samples, summary["structure_list"], data, self.output, self.rank == 0)
        self.methods = summary["methods"]
        if not self.split["train"]:
            raise ValueError("the training split is empty")
        self.origin = summary["origin"]  # dataset file of each structure id (for data.repeat)
        if not self.split["val"]:
            self.split["val"] = self.split["train"][: max(1, len(self.split["train"]) // 10)]
            if self.rank == 0:
                warnings.warn(
                    "the validation split is empty: validating on the first "
                    f"{len(self.split['val'])} training structures, so best.pt and early stopping "
                    "are chosen on data the model trains on (give data.split a validation fraction)",
                    stacklevel=3,
                )

    def _training_pool(self) -> list:
        repeat = self.config["data"].get("repeat") or {}
        for path in idle_repeats(self.split["train"], self.origin, repeat) if self.rank == 0 else []:
            warnings.warn(
                f"data.repeat: no structure of {path!r} is in the training split "
                "(all in validation/test), so repeating it does nothing",
                stacklevel=3,
            )
        return training_pool(self.split["train"], self.origin, repeat)

    def _build_model(self) -> None:
        m = self.config["model"]
        if m.get("init_from"):
            model, meta = load_checkpoint(m["init_from"], **m.get("overrides", {}))
            self.init_metadata = meta
        else:
            if m["preset"] not in PRESETS:
                raise ValueError(f"unknown model preset {m['preset']!r}; use one of {sorted(PRESETS)}")
            model = E2FormerLSR(PRESETS[m["preset"]](**m.get("overrides", {})))
            self.init_metadata = {}
        refit = m.get("refit_reference_energies", True)
        if not refit:
            self._check_same_method(m["init_from"])
        if refit:
            ref = fit_reference_energies(self.split["train"], model.config.num_embeddings)
            model.reference_energies.copy_(ref.to(model.reference_energies.dtype))
        self._check_elements(model)
        self.model = model.to(device=self.device, dtype=self.dtype).train()

    def _check_same_method(self, init_from) -> None:
        """Kept reference energies belong to the start model's level of theory; energies of
        another method differ by large per-element offsets that the network cannot absorb."""
        trained_on = self.init_metadata.get("level_of_theory") or []
        other = sorted(set(self.methods) - set(trained_on))
        if init_from and trained_on and other:
            raise ValueError(
                f"model.refit_reference_energies is false, but {init_from} was trained on {trained_on} "
                f"and the data is labelled with {other}: set refit_reference_energies: true"
            )

    def _check_elements(self, model) -> None:
        allowed = set(model.supported.nonzero().flatten().tolist())
        seen = {int(z) for side in self.split.values() for s in side for z in s.numbers.tolist()}
        bad = sorted(seen - allowed)
        if bad:
            raise ValueError(
                f"the dataset holds elements {bad} that the model does not support ({sorted(allowed)})"
            )

    @staticmethod
    def _copy_model(model):
        """A copy of ``model`` (deepcopy fails on the network's TorchScript helpers)."""
        twin = E2FormerLSR(model.config)
        twin.load_state_dict(model.state_dict())
        reference = next(model.parameters())
        return twin.to(device=reference.device, dtype=reference.dtype).train()

    # --- distributed helpers -----------------------------------------------------------------
    def _barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def _all_reduce_grads(self) -> None:
        if self.world_size == 1:
            return
        for p in self.model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)

    def _any_rank(self, flag: bool) -> bool:
        if self.world_size == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(t)
        return bool(t.item() > 0)

    # --- schedule ----------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        n = math.ceil(len(self.pool) / self.t["batch_size"])
        cap = self.t.get("max_steps_per_epoch")
        return min(n, cap) if cap else n

    def learning_rate(self, step: int) -> float:
        base = self.t["lr"]
        warm = self.t["warmup_steps"]
        if step < warm:
            return base * (step + 1) / warm
        if self.t["schedule"] == "cosine":
            total = max(1, self.t["epochs"] * self.steps_per_epoch() - warm)
            progress = min(1.0, (step - warm) / total)
            floor = self.t["min_lr_ratio"]
            return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
        if self.t["schedule"] == "plateau":
            return base * self.plateau_scale
        return base

    # --- one step ----------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng(self.t["seed"] * 100003 + epoch).permutation(len(self.pool))
        size = self.t["batch_size"]
        batches = [order[i : i + size].tolist() for i in range(0, len(order), size)]
        return batches[: self.steps_per_epoch()]

    def loss(self, batch: list[int]) -> tuple[torch.Tensor, dict]:
        """This process's share of the loss of a global batch (sums over processes to the full loss)."""
        samples = [self.pool[i] for i in batch]
        mine = samples[self.rank :: self.world_size]
        total_atoms = sum(s.num_atoms for s in samples)
        we, wf = self.t["energy_weight"], self.t["force_weight"]
        if not mine:
            # a zero that still has a gradient (this rank's share of a short batch is empty)
            zero = sum(p.sum() for p in self.model.parameters()) * 0.0
            return zero, {"e_sq": 0.0, "f_sq": 0.0}
        energies, forces = predict(self.model, mine, create_graph=True)
        ref_e = torch.stack([s.energy for s in mine])
        atoms = torch.tensor([s.num_atoms for s in mine], dtype=torch.float64, device=self.device)
        e_err = (energies.double() - ref_e) / atoms
        f_err = torch.cat([f - s.forces for f, s in zip(forces, mine, strict=False)])
        e_term = (e_err**2).sum() / len(samples)
        f_term = (f_err**2).sum() / (3 * total_atoms)
        loss = we * e_term.to(self.dtype) + wf * f_term
        return loss, {"e_sq": float(e_term.detach()), "f_sq": float(f_term.detach())}

    def train_step(self, batch: list[int]) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss, _ = self.loss(batch)
        loss.backward()
        self._all_reduce_grads()
        value = torch.tensor([float(loss.detach())], dtype=torch.float64, device=self.device)
        if self.world_size > 1:
            torch.distributed.all_reduce(value)
        if self.t["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.t["grad_clip"])
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        return float(value)

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.t["ema_decay"], (1 + self.step) / (10 + self.step))
        for e, p in zip(self.ema.parameters(), self.model.parameters(), strict=False):
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        for e, b in zip(self.ema.buffers(), self.model.buffers(), strict=False):
            e.copy_(b)

    # --- evaluation --------------------------------------------------------------------------
    def evaluate(self, model, samples, batch_size: int | None = None) -> ErrorAccumulator:
        acc = ErrorAccumulator()
        size = batch_size or max(self.t["batch_size"], 8)
        model.eval()
        for i in range(0, len(samples), size):
            chunk = samples[i : i + size]
            energies, forces = predict(model, chunk)
            for s, e, f in zip(chunk, energies, forces, strict=False):
                acc.add(
                    float(e.detach().double() - s.energy), s.num_atoms, (f.detach() - s.forces).cpu().numpy()
                )
        model.train()
        return acc

    # --- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "version": STATE_VERSION,
            "config": self.config,
            "model_config": self.model.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "epoch_losses": list(self.epoch_losses),
            "best_val": self.best_val,
            "bad_epochs": self.bad_epochs,
            "plateau_scale": self.plateau_scale,
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
            "elapsed_seconds": self.elapsed(),
        }

    def save_state(self) -> None:
        if self.rank != 0:
            return
        self.tensorboard.flush()
        path = os.path.join(self.output, "last.pt")
        tmp = f"{path}.tmp-{os.getpid()}"
        torch.save(self.state(), tmp)
        os.replace(tmp, path)

    def _resume(self) -> None:
        path = os.path.join(self.output, "last.pt")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ValueError(
                f"cannot resume: {path} is corrupt ({exc}); move it away to start afresh"
            ) from exc
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"cannot resume: {path} is not a training state of this version")
        if state["model_config"] != self.model.config.to_dict():
            raise ValueError(f"cannot resume: {path} was written for a different model configuration")
        self._check_same_data(state.get("config", {}).get("data", {}), path)
        self._check_same_order(state.get("config", {}).get("training", {}), path)
        build_model(self.model.config, state["model"], path)  # checks keys and shapes, names the file
        self.model.load_state_dict(state["model"])  # into the model already in the training dtype
        self.ema.load_state_dict(state["ema"])
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.t["lr"], weight_decay=self.t["weight_decay"]
        )
        self.optimizer.load_state_dict(state["optimizer"])
        for key in ("step", "epoch", "batch_in_epoch", "best_val", "bad_epochs", "plateau_scale", "history"):
            setattr(self, key, state[key])
        self.epoch_losses = list(state.get("epoch_losses", []))  # older states: from the resume on
        torch.set_rng_state(state["torch_rng"])
        # states written before elapsed_seconds existed: the time at the last epoch end
        fallback = float(self.history[-1]["seconds"]) if self.history else 0.0
        self.elapsed_before = float(state.get("elapsed_seconds", fallback))
        self.start_time = time.time()
        if self.rank == 0:
            self._truncate_steps_log()
            print(f"resuming from {path}: epoch {self.epoch}, step {self.step}", flush=True)

    def _check_same_data(self, saved: dict, path: str) -> None:
        """The data order of a resumed run depends on these keys; refuse a resume that changed one."""
        defaults = {"paths": [], "split_file": None, "max_atoms": None, "repeat": {}}
        for key, default in defaults.items():
            before, now = saved.get(key, default) or default, self.config["data"].get(key) or default
            if before != now:
                raise ValueError(
                    f"cannot resume: {path} was written with data.{key} = {before!r}, the config now "
                    f"says {now!r}; restore it or start afresh in a new output folder"
                )

    ORDER_KEYS = ("seed", "batch_size", "max_steps_per_epoch")  # which samples each step draws
    SCHEDULE_KEYS = ("epochs", "lr", "warmup_steps", "schedule", "min_lr_ratio", "weight_decay")

    def _check_same_order(self, saved: dict, path: str) -> None:
        """An exact resume needs the same batches: refuse a changed order key. A changed schedule
        key (more epochs, say) is a legitimate continuation, but no longer the run it resumes."""
        for key in self.ORDER_KEYS:
            if key in saved and saved[key] != self.t.get(key):
                raise ValueError(
                    f"cannot resume: {path} was written with training.{key} = {saved[key]!r}, the config "
                    f"now says {self.t.get(key)!r} (it changes which structures each step draws); restore "
                    "it or start afresh in a new output folder"
                )
        changed = [f"{k} {saved[k]!r} -> {self.t.get(k)!r}" for k in self.SCHEDULE_KEYS
                   if k in saved and saved[k] != self.t.get(k)]  # fmt: skip
        if changed and self.rank == 0:
            warnings.warn(f"resuming {path} with a changed schedule ({', '.join(changed)}): "
                          "the run continues, but it is no longer an exact resume", stacklevel=3)  # fmt: skip

    def _truncate_steps_log(self) -> None:
        path = os.path.join(self.output, "steps.csv")
        if not os.path.exists(path):
            return
        with open(path) as handle:
            rows = list(csv.reader(handle))
        keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= self.step]
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as handle:
            csv.writer(handle).writerows(keep)
        os.replace(tmp, path)

    def save_best(self, metrics: dict) -> None:
        if self.rank != 0:
            return
        meta = self.metadata()
        meta.update(epoch=self.epoch, step=self.step, validation=metrics)
        save_checkpoint(self.ema, os.path.join(self.output, "best.pt"), meta)

    def metadata(self) -> dict:
        return {
            "trained_by": "openmmml-e2former e2former train",
            "units": "positions Å, energy eV, forces eV/Å",
            "energy_unit": "eV",
            "force_unit": "eV/Angstrom",
            "length_unit": "Angstrom",
            "energy_reference": "absolute",  # total energies of the reference method
            "level_of_theory": self.methods,
            "data": self.config["data"]["paths"],
            "repeat": dict(self.config["data"].get("repeat") or {}),
            "split_sizes": {k: len(v) for k, v in self.split.items()},
            "draws_per_epoch": len(self.pool),
            "training": {k: v for k, v in self.t.items() if k not in ("progress",)},
            "fine_tuned_from": self.config["model"].get("init_from"),
        }

    # --- logs ---------------------------------------------------------------------------------
    def _append_csv(self, name: str, row: dict) -> None:
        if self.rank != 0:
            return
        path = os.path.join(self.output, name)
        new = not os.path.exists(path)
        with open(path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    # --- main loop ----------------------------------------------------------------------------
    def _install_signals(self):
        def handler(signum, frame):
            self.stop_requested = True
            if self.rank == 0:
                print(f"\nsignal {signum}: saving a checkpoint after this step", flush=True)

        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, handler)
        return previous

    def _out_of_time(self) -> bool:
        limit = self.t.get("max_train_seconds")
        return bool(limit) and self.elapsed() > limit

    def elapsed(self) -> float:
        """Wall seconds of training so far, over every piece of a resumed run."""
        return self.elapsed_before + time.time() - self.start_time

    def fit(self, max_steps: int | None = None) -> str:
        """Train until ``epochs``, early stopping, a signal, the time limit or ``max_steps`` total steps.

        Returns the reason it stopped: 'finished', 'early_stopping', 'interrupted', 'time_limit' or
        'max_steps'.
        """
        previous = self._install_signals()
        try:
            return self._fit(max_steps)
        finally:
            self.tensorboard.close()
            for s, h in previous.items():
                signal.signal(s, h)

    def _fit(self, max_steps: int | None) -> str:
        from tqdm import tqdm

        every = self.t["checkpoint_every_steps"]
        while self.epoch < self.t["epochs"]:
            batches = self.epoch_batches(self.epoch)
            bar = tqdm(
                total=len(batches),
                initial=self.batch_in_epoch,
                desc=f"epoch {self.epoch + 1}/{self.t['epochs']}",
                disable=not self.t["progress"] or self.rank != 0,
            )
            losses = self.epoch_losses
            while self.batch_in_epoch < len(batches):
                loss = self.train_step(batches[self.batch_in_epoch])
                self.batch_in_epoch += 1
                losses.append(loss)
                self._append_csv(
                    "steps.csv",
                    {
                        "step": self.step,
                        "epoch": self.epoch,
                        "loss": loss,
                        "lr": self.learning_rate(self.step - 1),
                    },
                )
                self.tensorboard.scalars(
                    {"train/loss": loss, "train/lr": self.learning_rate(self.step - 1)}, self.step
                )
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}")
                stop = self._any_rank(self.stop_requested)
                if stop or (every and self.step % every == 0):
                    self.save_state()
                if stop:
                    bar.close()
                    return "interrupted"
                if max_steps is not None and self.step >= max_steps:
                    self.save_state()
                    bar.close()
                    return "max_steps"
                if self._any_rank(self._out_of_time()):
                    self.save_state()
                    bar.close()
                    return "time_limit"
            bar.close()
            reason = self._end_epoch(losses)
            if reason:
                return reason
        return "finished"

    def _end_epoch(self, losses: list[float]) -> str | None:
        metrics = self.evaluate(self.ema, self.split["val"]).summary() if self.rank == 0 else {}
        if self.world_size > 1:  # every rank decides on improvement and early stopping alike
            shared = [metrics]
            torch.distributed.broadcast_object_list(shared, src=0)
            metrics = shared[0]
        val_loss = metrics.get("force_mae", 0.0) + metrics.get("energy_mae", 0.0)
        improved = val_loss < self.best_val
        if improved:
            self.best_val = val_loss
            self.bad_epochs = 0
            self.save_best(metrics)
        else:
            self.bad_epochs += 1
            if self.t["schedule"] == "plateau" and self.bad_epochs % self.t["plateau_patience"] == 0:
                self.plateau_scale *= self.t["plateau_factor"]
        row = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "lr": self.learning_rate(self.step),
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            **{f"val_{k}": v for k, v in metrics.items() if k != "count"},
            "seconds": round(self.elapsed(), 1),
        }
        self.history.append(row)
        self._append_csv("epochs.csv", row)
        self.tensorboard.scalars({f"val/{k}": v for k, v in metrics.items() if k != "count"}, self.step)
        self.tensorboard.scalars({"train/epoch_loss": row["train_loss"]}, self.step)
        if self.rank == 0:
            print(
                f"epoch {self.epoch + 1}: train loss {row['train_loss']:.4g}, val E MAE "
                f"{1000 * metrics.get('energy_mae', 0):.2f} meV/atom, "
                f"val F MAE {metrics.get('force_mae', 0):.4f} eV/Å" + (" (best)" if improved else ""),
                flush=True,
            )
        self.epoch += 1
        self.batch_in_epoch = 0
        self.epoch_losses = []
        self.save_state()
        if self.bad_epochs >= self.t["early_stopping_patience"]:
            return "early_stopping"
        return None

    def final_evaluation(self) -> dict:
        """Evaluate ``best.pt`` (or the EMA weights) on the test split; writes final.json/final_table.md."""
        path = os.path.join(self.output, "best.pt")
        model = (
            load_checkpoint(path)[0].to(device=self.device, dtype=self.dtype)
            if os.path.exists(path)
            else self.ema
        )
        samples = self.split["test"] or self.split["val"]
        acc = self.evaluate(model, samples)
        result = {
            "split": "test" if self.split["test"] else "val",
            "overall": acc.summary(),
            "by_size": acc.by_size(),
        }
        with open(os.path.join(self.output, "final.json"), "w") as handle:
            json.dump(result, handle, indent=2)
        with open(os.path.join(self.output, "final_table.md"), "w") as handle:
            handle.write(format_table(acc.by_size() + [{"atoms": "all", **acc.summary()}]) + "\n")
        return result

"""Training pipeline: batching equals per-structure calls, reference energies, loss falls, exact resume,
two gloo processes give the same first-step gradients as one, config and checkpoint errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import time

import numpy as np
import pytest
import torch

from openmmml_e2former.data.extxyz import write_structures
from openmmml_e2former.model import E2FormerLSR, small_config
from openmmml_e2former.train.batching import fit_reference_energies, predict, to_sample
from openmmml_e2former.train.config import merge_config
from openmmml_e2former.train.trainer import Trainer

TINY_DATASET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tiny-dipeptides.extxyz.gz")
TINY = dict(
    channels=16, embed_dim=16, num_local_layers=1, num_long_layers=1, num_heads=2, head_dim=4,
    num_basis=16, edge_embed_dim=16,
)  # fmt: skip


def jiggled_molecules(per_molecule: int = 6, seed: int = 0) -> list:
    """Small molecules (charges -1, 0, +1) with Gaussian displacements (0.03 Å) of an MMFF geometry."""
    from openmmml_e2former.data.generators import random_cluster
    from openmmml_e2former.data.structure import Structure

    rng = np.random.default_rng(seed)
    out = []
    for name in ("acetate", "methylammonium", "methanol", "methanethiol", "water"):
        numbers, coords, frags, charge = random_cluster(
            [name] if name != "water" else ["water", "water"], rng
        )
        for i in range(per_molecule):
            pos = coords + rng.normal(scale=0.03, size=coords.shape)
            out.append(Structure(f"{name}/{i}", name, numbers, pos, frags, charge=charge))
    return out


@pytest.fixture(scope="module")
def tiny_dataset() -> str:
    """GFN2-xTB-labelled conformers of five capped dipeptides (charges -1, 0, +1; OBC2 MD at 400 K,
    8 each): the frozen tests/data/tiny-dipeptides.extxyz.gz (make_tiny_dataset.py)."""
    return TINY_DATASET


def tiny_config(data: str, output: str, **training) -> dict:
    t = dict(output=output, epochs=3, batch_size=4, lr=1e-2, warmup_steps=2, progress=False,
             checkpoint_every_steps=0, seed=1, dtype="float64")  # fmt: skip
    t.update(training)
    return merge_config(
        {
            "data": {"paths": [data], "split": [0.7, 0.15, 0.15]},
            "model": {"preset": "small", "overrides": TINY},
            "training": t,
        }
    )


def steps(path: str) -> list[tuple[int, float]]:
    with open(os.path.join(path, "steps.csv")) as handle:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(handle)]


def test_batched_prediction_equals_single_calls():
    torch.manual_seed(0)
    model = E2FormerLSR(small_config(**TINY)).double()
    with torch.no_grad():
        model.charge_embedding.normal_()  # make the charge matter
    structures = jiggled_molecules(per_molecule=2)
    for s in structures:
        s.energy, s.forces = 0.0, np.zeros_like(s.positions)
    picked = [s for s in structures if s.charge != 0][:4] + [s for s in structures if s.charge == 0][:4]
    samples = [to_sample(s, dtype=torch.float64) for s in picked]
    assert len({s.charge for s in samples}) > 1
    energies, forces = predict(model, samples)
    for i, s in enumerate(samples):
        z = s.numbers
        pos = s.positions.clone().requires_grad_(True)
        e = model(pos, z, s.fragments, torch.tensor(s.charge, dtype=torch.float64))
        (g,) = torch.autograd.grad(e, pos)
        assert float(energies[i].detach()) == pytest.approx(float(e), abs=1e-9)
        torch.testing.assert_close(forces[i], -g, atol=1e-9, rtol=0)


def test_reference_energies_recover_exact_per_element_sums():
    rng = np.random.default_rng(0)
    truth = {1: -13.1, 6: -48.2, 8: -103.7}
    samples = []
    for _k in range(12):
        numbers = rng.choice([1, 6, 8], size=rng.integers(3, 9))
        numbers[:3] = [1, 6, 8]
        s = to_sample_like(numbers, sum(truth[int(z)] for z in numbers))
        samples.append(s)
    ref = fit_reference_energies(samples, 16)
    for z, e in truth.items():
        assert float(ref[z]) == pytest.approx(e, abs=1e-6)
    assert float(ref[7]) == 0.0


def to_sample_like(numbers, energy):
    from openmmml_e2former.data.structure import Structure

    n = len(numbers)
    s = Structure("x", "x", numbers, np.zeros((n, 3)), np.zeros(n), energy=energy, forces=np.zeros((n, 3)))
    return to_sample(s)


def test_loss_falls_and_outputs_are_written(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, str(tmp_path / "run"), epochs=12)
    trainer = Trainer(config)
    assert trainer.fit() == "finished"
    losses = [loss for _, loss in steps(trainer.output)]
    print(np.round(losses, 1))
    assert np.mean(losses[-6:]) < 0.7 * np.mean(losses[:6])
    for name in ("last.pt", "best.pt", "splits.json", "epochs.csv"):
        assert os.path.exists(os.path.join(trainer.output, name))
    result = trainer.final_evaluation()
    assert result["overall"]["count"] > 0 and np.isfinite(result["overall"]["force_mae"])


def test_split_keeps_molecules_together(tiny_dataset, tmp_path):
    trainer = Trainer(tiny_config(tiny_dataset, str(tmp_path / "run")))
    groups = {side: {s.group for s in samples} for side, samples in trainer.split.items()}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["val"]


def test_a_split_file_that_misses_a_structure_is_refused_before_anything_is_written(tiny_dataset, tmp_path):
    from openmmml_e2former.data.extxyz import read_structures

    ids = [s.id for s in read_structures(tiny_dataset)]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ids[:-1], "val": [], "test": []}))
    config = tiny_config(tiny_dataset, str(tmp_path / "run"))
    config["data"]["split_file"] = str(split)
    with pytest.raises(ValueError, match=f"on no side, e.g. \\['{ids[-1]}'\\]"):
        Trainer(merge_config(config))
    assert not (tmp_path / "run" / "splits.json").exists()


def test_resume_mid_run_continues_the_same_loss_curve(tiny_dataset, tmp_path):
    full = Trainer(tiny_config(tiny_dataset, str(tmp_path / "full")))
    full.fit()
    part = Trainer(tiny_config(tiny_dataset, str(tmp_path / "part")))
    assert part.fit(max_steps=5) == "max_steps"  # stops mid-epoch 2 (4 steps per epoch)
    del part
    resumed = Trainer(tiny_config(tiny_dataset, str(tmp_path / "part")))
    assert resumed.step == 5
    resumed.fit()
    a, b = steps(str(tmp_path / "full")), steps(str(tmp_path / "part"))
    assert [s for s, _ in a] == [s for s, _ in b]
    np.testing.assert_allclose([x for _, x in a], [x for _, x in b], rtol=1e-10, atol=0)
    # a SIGTERM during step 3 (as a batch system sends it) saves after that step; the resume
    # continues the same curve
    killed = Trainer(tiny_config(tiny_dataset, str(tmp_path / "killed")))
    loss = killed.loss

    def loss_then_signal(batch):
        if killed.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(batch)

    killed.loss = loss_then_signal
    assert killed.fit() == "interrupted" and killed.step == 3
    resumed = Trainer(tiny_config(tiny_dataset, str(tmp_path / "killed")))
    assert resumed.step == 3
    resumed.fit()
    c = steps(str(tmp_path / "killed"))
    assert [s for s, _ in a] == [s for s, _ in c]
    np.testing.assert_allclose([x for _, x in a], [x for _, x in c], rtol=1e-10, atol=0)
    # stopped after the last step of epoch 1, before its validation: the resume's epoch rows
    # still average every step of their epoch (they did not restart the mean, or give NaN)
    boundary = Trainer(tiny_config(tiny_dataset, str(tmp_path / "boundary")))
    assert boundary.fit(max_steps=4) == "max_steps"
    Trainer(tiny_config(tiny_dataset, str(tmp_path / "boundary"))).fit()
    expected = epoch_losses(str(tmp_path / "full"))
    for run in ("part", "killed", "boundary"):
        np.testing.assert_allclose(epoch_losses(str(tmp_path / run)), expected, rtol=1e-10, atol=0)
    by_epoch: dict = {}
    for row in csv.DictReader(open(os.path.join(tmp_path / "full", "steps.csv"))):
        by_epoch.setdefault(int(row["epoch"]), []).append(float(row["loss"]))
    np.testing.assert_allclose(expected, [np.mean(v) for _, v in sorted(by_epoch.items())], rtol=1e-12)


def epoch_losses(path: str) -> list[float]:
    with open(os.path.join(path, "epochs.csv")) as handle:
        return [float(r["train_loss"]) for r in csv.DictReader(handle)]


def test_plateau_schedule_and_early_stopping_follow_the_validation_losses(tiny_dataset, tmp_path):
    """Validation losses 1, 2, 2 (faked): the second and third epochs are bad, so with
    plateau_patience 1 the rate halves twice, and patience 2 stops after the third epoch."""
    config = tiny_config(tiny_dataset, str(tmp_path / "run"), schedule="plateau", plateau_patience=1,
                         plateau_factor=0.5, early_stopping_patience=2, warmup_steps=0, lr=1e-3)  # fmt: skip
    trainer = Trainer(config)
    losses = iter([1.0, 2.0, 2.0])

    class Fake:
        def summary(self):
            return {"count": 1, "force_mae": next(losses), "energy_mae": 0.0}

    trainer.evaluate = lambda model, samples: Fake()
    assert trainer._end_epoch([0.1]) is None and trainer.learning_rate(10) == pytest.approx(1e-3)
    assert trainer._end_epoch([0.1]) is None and trainer.learning_rate(10) == pytest.approx(5e-4)
    assert trainer._end_epoch([0.1]) == "early_stopping"
    assert trainer.learning_rate(10) == pytest.approx(2.5e-4) and trainer.best_val == 1.0


def _first_step_grads(rank, world_size, config, out):
    trainer = Trainer(config, rank, world_size)
    batch = trainer.epoch_batches(0)[0]
    trainer.optimizer.zero_grad()
    loss, _ = trainer.loss(batch)
    loss.backward()
    trainer._all_reduce_grads()
    if rank == 0:
        torch.save({k: p.grad.clone() for k, p in trainer.model.named_parameters()}, out)


def test_two_gloo_processes_give_the_same_first_step_gradients(tiny_dataset, tmp_path):
    from openmmml_e2former.train.ddp import spawn

    config = tiny_config(tiny_dataset, str(tmp_path / "one"))
    _first_step_grads(0, 1, config, str(tmp_path / "one.pt"))
    config2 = tiny_config(tiny_dataset, str(tmp_path / "two"))
    spawn(_first_step_grads, 2, config2, str(tmp_path / "two.pt"))
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one.keys() == two.keys()
    nonzero = 0
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=1e-10, rtol=1e-8)
        nonzero += int(one[k].abs().sum() > 0)
    assert nonzero > len(one) // 2


def test_resume_refuses_a_corrupt_training_state(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="corrupt"):
        Trainer(tiny_config(tiny_dataset, str(out)))


def test_resume_refuses_a_changed_batch_order_and_warns_of_a_changed_schedule(tiny_dataset, tmp_path):
    out = str(tmp_path / "run")
    assert Trainer(tiny_config(tiny_dataset, out)).fit(max_steps=2) == "max_steps"
    with pytest.raises(ValueError, match=r"training\.batch_size = 4, the config now says 3"):
        Trainer(tiny_config(tiny_dataset, out, batch_size=3))
    with pytest.raises(ValueError, match=r"training\.seed = 1, the config now says 2"):
        Trainer(tiny_config(tiny_dataset, out, seed=2))
    with pytest.warns(UserWarning, match="changed schedule \\(epochs 3 -> 5\\)"):
        assert Trainer(tiny_config(tiny_dataset, out, epochs=5)).step == 2


def test_config_errors_name_the_key(tiny_dataset):
    with pytest.raises(ValueError, match="learning_rate"):
        merge_config({"data": {"paths": [tiny_dataset]}, "training": {"learning_rate": 1e-3}})
    with pytest.raises(ValueError, match="data.paths"):
        merge_config({})


def test_repeat_oversamples_one_file_of_the_training_data(tiny_dataset, tmp_path):
    from collections import Counter

    from openmmml_e2former.data.extxyz import read_structures

    structures = read_structures(tiny_dataset)
    first, second = str(tmp_path / "a.extxyz"), str(tmp_path / "b.extxyz")
    write_structures(first, [s for s in structures if "LYS" not in s.molecule])
    write_structures(second, [s for s in structures if "LYS" in s.molecule])
    config = tiny_config(first, str(tmp_path / "run"))
    config["data"].update(paths=[first, second], split=[1.0, 0.0, 0.0], repeat={second: 3})
    with pytest.warns(UserWarning, match="validation split is empty"):
        trainer = Trainer(merge_config(config))
    counts = Counter(s.id for s in trainer.pool)
    train_ids = {s.id for s in trainer.split["train"]}
    assert set(counts) == train_ids and len(train_ids) == len(structures)
    assert {counts[s.id] for s in structures if "LYS" in s.molecule} == {3}
    assert {counts[s.id] for s in structures if "LYS" not in s.molecule} == {1}
    assert trainer.steps_per_epoch() == -(-len(trainer.pool) // 4)
    drawn = sorted(i for batch in trainer.epoch_batches(0) for i in batch)
    assert drawn == list(range(len(trainer.pool)))
    # the pool holds the split's own samples (those moved to the training device), and a repeated
    # sample beyond the split's length trains
    assert {id(s) for s in trainer.pool} == {id(s) for s in trainer.split["train"]}
    loss, _ = trainer.loss([len(trainer.pool) - 1])
    assert torch.isfinite(loss)
    assert trainer.fit(max_steps=2) == "max_steps"
    del trainer
    assert Trainer(merge_config(config)).step == 2  # same data: resumes
    config["data"]["repeat"] = {second: 2}
    with pytest.raises(ValueError, match=r"data\.repeat"):
        Trainer(merge_config(config))


def test_repeat_of_a_file_outside_the_training_split_warns_and_metadata_counts_draws(tiny_dataset, tmp_path):
    from openmmml_e2former.data.extxyz import read_structures

    structures = read_structures(tiny_dataset)
    first, second = str(tmp_path / "a.extxyz"), str(tmp_path / "b.extxyz")
    lys = [s for s in structures if "LYS" in s.molecule]
    write_structures(first, [s for s in structures if "LYS" not in s.molecule])
    write_structures(second, lys)
    split = tmp_path / "split.json"  # every LYS structure in validation: repeating them is idle
    others = [s.id for s in structures if "LYS" not in s.molecule]
    split.write_text(json.dumps({"train": others, "val": [s.id for s in lys], "test": []}))
    config = tiny_config(first, str(tmp_path / "run"))
    config["data"].update(paths=[first, second], split_file=str(split), repeat={second: 3})
    with pytest.warns(UserWarning, match="no structure of .*b.extxyz.* is in the training split"):
        trainer = Trainer(merge_config(config))
    assert len(trainer.pool) == len(others)
    assert trainer.metadata()["draws_per_epoch"] == len(others)


def test_repeat_errors_name_the_path_and_the_value(tiny_dataset):
    with pytest.raises(ValueError, match="not one of data.paths"):
        merge_config({"data": {"paths": [tiny_dataset], "repeat": {"other.extxyz": 2}}})
    with pytest.raises(ValueError, match="whole number"):
        merge_config({"data": {"paths": [tiny_dataset], "repeat": {tiny_dataset: 0.5}}})


def _event_scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
    """Scalars of TensorBoard event files, read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(folder)
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_scalars_match_the_csv_logs_and_survive_a_resume(tiny_dataset, tmp_path):
    out = str(tmp_path / "run")
    part = Trainer(tiny_config(tiny_dataset, out, tensorboard=True))
    assert part.fit(max_steps=5) == "max_steps"  # mid-epoch 2: steps 1-4 and 5 logged
    del part
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(os.path.join(out, "tensorboard")) as stale:  # as a kill after step 6 leaves it
        stale.add_scalar("train/loss", 1e9, 6)
    # TensorBoard reads event files in name order, and names hold the creation second and a
    # per-process counter: a real resume (a new process, later) always sorts after the killed
    # run's file; within one test process the two could share a second and sort wrongly once
    # the counter passes 9 -> 10 (seen in a full-suite run), so make the stale file older
    time.sleep(1.1)
    resumed = Trainer(tiny_config(tiny_dataset, out, tensorboard=True))
    resumed.fit()
    scalars = _event_scalars(os.path.join(out, "tensorboard"))
    logged = steps(out)
    assert [s for s, _ in scalars["train/loss"]] == [s for s, _ in logged]  # each step once, none stale
    np.testing.assert_allclose([v for _, v in scalars["train/loss"]], [v for _, v in logged], rtol=1e-6)
    with open(os.path.join(out, "epochs.csv")) as handle:
        epochs = list(csv.DictReader(handle))
    assert [s for s, _ in scalars["val/force_mae"]] == [int(e["step"]) for e in epochs]
    np.testing.assert_allclose(
        [v for _, v in scalars["val/force_mae"]], [float(e["val_force_mae"]) for e in epochs], rtol=1e-6
    )


def test_tensorboard_true_without_the_package_is_a_clear_error(tiny_dataset, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    with pytest.raises(ValueError, match="pip install tensorboard"):
        Trainer(tiny_config(tiny_dataset, str(tmp_path / "run"), tensorboard=True))
    quiet = Trainer(tiny_config(tiny_dataset, str(tmp_path / "auto")))  # auto: CSV logs only
    assert not quiet.tensorboard.active
    with pytest.raises(ValueError, match="training.tensorboard"):
        tiny_config(tiny_dataset, str(tmp_path / "x"), tensorboard="sometimes")


def test_device_setting_is_checked(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="training.device"):
        tiny_config(tiny_dataset, str(tmp_path / "x"), device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            Trainer(tiny_config(tiny_dataset, str(tmp_path / "run"), device="cuda"))
    trainer = Trainer(tiny_config(tiny_dataset, str(tmp_path / "cpu"), device="cpu"))
    assert trainer.device.type == "cpu" and next(trainer.model.parameters()).device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_follows_the_cpu_loss_curve(tiny_dataset, tmp_path):
    """The same float64 run on the GPU and on the CPU: same losses step by step."""
    cpu = Trainer(tiny_config(tiny_dataset, str(tmp_path / "cpu"), device="cpu"))
    cpu.fit(max_steps=4)
    gpu = Trainer(tiny_config(tiny_dataset, str(tmp_path / "gpu"), device="cuda"))
    assert next(gpu.model.parameters()).is_cuda
    gpu.fit(max_steps=4)
    a, b = steps(str(tmp_path / "cpu")), steps(str(tmp_path / "gpu"))
    np.testing.assert_allclose([x for _, x in b], [x for _, x in a], rtol=1e-6)


def test_fine_tuning_starts_from_the_shipped_weights(tiny_dataset, tmp_path):
    """configs/finetune-example.yaml with the tiny dataset: training starts from the shipped weights,
    keeps their element energies (refit off), lowers the loss on the new data, and the result loads
    through MLPotential(modelPath=...)."""
    import yaml
    from openmmml import MLPotential

    from openmmml_e2former.checkpoints import find_shipped_potential, load_checkpoint

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "configs", "finetune-example.yaml")) as handle:
        user = yaml.safe_load(handle)
    user["data"]["paths"] = [tiny_dataset]
    user["training"].update(output=str(tmp_path / "ft"), epochs=4, progress=False, lr=5e-4, warmup_steps=1)
    config = merge_config(user)
    shipped, _ = load_checkpoint(find_shipped_potential("e2former-lsr"))
    trainer = Trainer(config)
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for key, value in shipped.state_dict().items():
        torch.testing.assert_close(start[key], value.to(start[key].dtype))
    trainer.fit()
    losses = [loss for _, loss in steps(trainer.output)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    tuned, meta = load_checkpoint(os.path.join(trainer.output, "best.pt"))
    torch.testing.assert_close(tuned.reference_energies, shipped.reference_energies)
    assert meta["fine_tuned_from"] == user["model"]["init_from"]
    moved = sum(not torch.equal(tuned.state_dict()[k], v) for k, v in shipped.state_dict().items())
    assert moved > 10  # weights were trained
    from openmmml_e2former.data.extxyz import read_structures
    from openmmml_e2former.data.structure import openmm_topology

    first = read_structures(tiny_dataset)[0]
    weights = os.path.join(trainer.output, "best.pt")
    MLPotential("e2former-lsr", modelPath=weights).createSystem(openmm_topology([first]), charge=first.charge)


def test_fine_tuning_on_another_level_of_theory_must_refit_the_element_energies(tiny_dataset, tmp_path):
    from openmmml_e2former.checkpoints import find_shipped_potential
    from openmmml_e2former.data.extxyz import read_structures

    structures = read_structures(tiny_dataset)
    for s in structures:
        s.labels["method"] = "PBE0/def2-SVP"
    dft = str(tmp_path / "dft.extxyz")
    write_structures(dft, structures)
    config = {"data": {"paths": [dft]}, "model": {"init_from": find_shipped_potential("e2former-lsr")}}
    config["training"] = {"output": str(tmp_path / "ft"), "progress": False}
    config["model"]["refit_reference_energies"] = False
    with pytest.raises(ValueError, match=r"trained on \['GFN2-xTB'\].*labelled with \['PBE0/def2-SVP'\]"):
        Trainer(merge_config(config))
    config["model"]["refit_reference_energies"] = True
    assert Trainer(merge_config(config)).methods == ["PBE0/def2-SVP"]


def _fit_rank(rank, world_size, config, prefix):
    import json

    trainer = Trainer(config, rank, world_size)
    reason = trainer.fit()
    result = {"reason": reason, "step": trainer.step, "epoch": trainer.epoch, "best": trainer.best_val}
    with open(f"{prefix}-{rank}.json", "w") as handle:
        json.dump(result, handle)


def test_two_processes_agree_on_validation_and_early_stopping(tiny_dataset, tmp_path):
    """Only rank 0 evaluates the validation split; every rank must take its result, or they disagree
    on improvement and early stopping and one leaves while the other waits in an all-reduce (run in a
    subprocess with a time limit, so a hang fails the test)."""
    import json
    import subprocess
    import sys

    prefix = str(tmp_path / "rank")
    script = (
        f"import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
        "from test_training import _fit_rank, tiny_config\n"
        "from openmmml_e2former.train.ddp import spawn\n"
        f"config = tiny_config({tiny_dataset!r}, {str(tmp_path / 'run')!r}, epochs=5,"
        " early_stopping_patience=2)\n"
        f"spawn(_fit_rank, 2, config, {prefix!r})\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.load(open(f"{prefix}-{r}.json")) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    with open(tmp_path / "run" / "epochs.csv") as handle:
        assert len(list(csv.DictReader(handle))) == ranks[0]["epoch"]


def test_wall_time_budget_counts_every_piece_of_a_resumed_run(tiny_dataset, tmp_path):
    out = str(tmp_path / "run")
    part = Trainer(tiny_config(tiny_dataset, out))
    part.fit(max_steps=3)
    saved = torch.load(os.path.join(out, "last.pt"), weights_only=False)["elapsed_seconds"]
    assert saved > 0
    del part
    resumed = Trainer(tiny_config(tiny_dataset, out, max_train_seconds=saved))  # budget already spent
    assert resumed.elapsed() >= saved
    assert resumed.fit() == "time_limit" and resumed.step == 4  # one step, then the limit


def test_more_processes_than_gpus(monkeypatch):
    """nccl needs one GPU per process: ``auto`` falls back to the CPU, ``cuda`` is an error
    (CUDA is faked: only the decision is tested)."""
    from openmmml_e2former.train.ddp import plan_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert plan_device("auto", 1) == "auto" and plan_device("cuda", 1) == "cuda"
    assert plan_device("auto", 2) == "cpu" and plan_device("cpu", 2) == "cpu"
    with pytest.raises(ValueError, match="one GPU per process"):
        plan_device("cuda", 2)


def test_the_command_line_workflow_generates_labels_trains_and_evaluates(tmp_path, capsys):
    """The user's path, all through ``e2former``: generate conformers, label them with GFN2-xTB
    (2 processes), merge, train from a YAML config, evaluate best.pt on its test split."""
    import yaml

    from openmmml_e2former.cli import main
    from openmmml_e2former.data.extxyz import read_structures

    raw, labels, merged = tmp_path / "raw.extxyz", tmp_path / "labels", tmp_path / "data.extxyz.gz"
    generate = ["label", "generate", "peptides", "--sequences", "GLY,ALA,SER,ASP", "--frames", "3"]
    assert main(generate + ["--temperatures", "400", "-o", str(raw)]) == 0
    assert main(["label", "run", str(raw), "-o", str(labels), "--workers", "2", "--chunk-size", "5"]) == 0
    assert main(["label", "merge", str(labels), "-o", str(merged)]) == 0
    data = read_structures(str(merged))
    assert len(data) == 12 and all(s.labelled and s.labels["method"] == "GFN2-xTB" for s in data)
    config = {
        "data": {"paths": [str(merged)], "split": [0.5, 0.25, 0.25]},
        "model": {"preset": "small", "overrides": TINY},
        "training": {"output": str(tmp_path / "run"), "epochs": 2, "batch_size": 3, "progress": False},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "config.yaml")]) == 0
    assert "final evaluation (test split, best.pt)" in capsys.readouterr().out
    split = json.loads((tmp_path / "run" / "splits.json").read_text())
    report = tmp_path / "errors.json"
    evaluate = ["evaluate", str(tmp_path / "run" / "best.pt"), str(merged), "--split"]
    assert main(evaluate + [str(tmp_path / "run" / "splits.json"), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["overall"]["count"] == len(split["test"]) > 0
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2

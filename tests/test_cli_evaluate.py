"""``e2former evaluate`` (alias ``eval``) on a dataset of this project: the predictions are the
network's on the file's own fragments (the command's former XYZ reader looked for
``cluster_ids``/``fragment_ids``, missed the datasets' ``fragment_id`` and silently re-fragmented
every molecule with BRICS), and the error figures are the MAEs of those predictions."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from model_helpers import seeded_model

from openmmml_e2former.checkpoints import save_checkpoint
from openmmml_e2former.cli import main
from openmmml_e2former.data.extxyz import read_structures
from openmmml_e2former.evaluation import evaluate

DATASET = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets", "gfn2-villin-halves.extxyz.gz"
)
TINY = dict(channels=16, embed_dim=16, num_local_layers=1, num_long_layers=1, num_heads=2, head_dim=4)
KJ_PER_EV = 96.48533212331  # CODATA 2018: e * N_A / 1000, typed here independently of the package


def energy_forces(model, s, fragment_ids):
    positions = torch.tensor(s.positions, dtype=torch.float64, requires_grad=True)
    numbers = torch.tensor(s.numbers, dtype=torch.long)
    charge = torch.tensor(float(s.charge), dtype=torch.float64)
    energy = model(positions, numbers, torch.tensor(fragment_ids, dtype=torch.long), charge, None, None)
    (gradient,) = torch.autograd.grad(energy, positions)
    return float(energy.detach()), -gradient.numpy()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small random network saved as a checkpoint (float32, as checkpoints are stored), and the
    same weights in float64 for the direct evaluation."""
    model = seeded_model(torch.float32, seed=3, **TINY)
    path = tmp_path_factory.mktemp("evaluate") / "tiny.pt"
    save_checkpoint(model, str(path))
    return str(path), model.double()


def test_evaluate_predicts_on_the_files_fragments_and_reports_their_errors(checkpoint, tmp_path, capsys):
    path, model = checkpoint
    chosen = read_structures(DATASET)[:3]
    assert all(s.labelled and len(set(s.fragment_ids)) > 1 for s in chosen)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [], "val": [], "test": [s.id for s in chosen]}))
    direct = [energy_forces(model, s, s.fragment_ids) for s in chosen]
    # the test has power: one fragment instead of the file's changes the energy clearly
    lumped, _ = energy_forces(model, chosen[0], np.zeros(chosen[0].num_atoms, dtype=np.int64))
    assert abs(lumped - direct[0][0]) > 1e-4 * chosen[0].num_atoms

    out = tmp_path / "result.json"
    args = ["evaluate", path, DATASET, "--split", str(split), "--precision", "double"]
    assert main(args + ["--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["id"] for r in result["structures"]] == [s.id for s in chosen]
    for r, (energy, forces) in zip(result["structures"], direct, strict=True):
        assert r["energy"] == pytest.approx(energy, rel=1e-10)
        np.testing.assert_allclose(r["forces"], forces, rtol=0, atol=1e-9 * np.abs(forces).max())

    energy_mae = np.mean([abs(e - s.energy) / s.num_atoms for s, (e, _) in zip(chosen, direct, strict=True)])
    force_mae = np.concatenate(
        [np.abs(f - s.forces).ravel() for s, (_, f) in zip(chosen, direct, strict=True)]
    )
    force_mae = force_mae.mean()
    assert result["overall"]["count"] == 3
    assert result["overall"]["energy_mae"] == pytest.approx(energy_mae, rel=1e-9)
    assert result["overall"]["force_mae"] == pytest.approx(force_mae, rel=1e-9)
    text = capsys.readouterr().out  # with labels: the error table on stdout, not the forces
    assert f"| all | 3 | {1000 * energy_mae:.2f} |" in text and f"| {force_mae:.4f} |" in text
    assert len(text.splitlines()) < 10

    # the old spelling and `--json` alone: the same result as JSON on stdout, energies in kJ/mol,
    # errors still in eV
    assert main(["eval", *args[1:], "--units", "kJ/mol", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["energy_unit"] == "kJ/mol"
    for r, (energy, _) in zip(again["structures"], direct, strict=True):
        assert r["energy"] == pytest.approx(energy * KJ_PER_EV, rel=1e-10)
    assert again["overall"]["force_mae"] == pytest.approx(force_mae, rel=1e-9)


def test_evaluate_from_python_gives_the_networks_predictions_on_the_read_structures(checkpoint):
    """The library function behind the command, called with a checkpoint path and a split, or with
    the network itself and structures in memory: the predictions are the network's on them."""
    path, model = checkpoint
    chosen = read_structures(DATASET)[3:5]
    ids = [s.id for s in chosen]
    direct = [energy_forces(model, s, s.fragment_ids) for s in chosen]
    by_path = evaluate(path, DATASET, precision="double", split={"test": ids})
    by_network = evaluate(model, chosen, precision="double")
    for result in (by_path, by_network):
        assert [r["id"] for r in result["structures"]] == ids and result["overall"]["count"] == 2
        for r, (energy, forces) in zip(result["structures"], direct, strict=True):
            assert r["energy"] == pytest.approx(energy, rel=1e-10)
            np.testing.assert_allclose(r["forces"], forces, rtol=0, atol=1e-9 * np.abs(forces).max())
    # single precision runs a float32 copy: the caller's float64 network is left as it was
    single = evaluate(model, chosen[:1])
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert single["structures"][0]["energy"] == pytest.approx(direct[0][0], rel=1e-5)
    assert single["structures"][0]["energy"] != direct[0][0]


def test_a_dataset_frame_without_fragment_ids_is_an_error_not_brics(checkpoint, tmp_path, capsys):
    """A frame that is one of this project's (it has an ``id``) but lacks ``fragment_id`` is refused
    by the dataset reader; it must not fall through to the BRICS path for foreign files."""
    import ase

    bad = tmp_path / "bad.extxyz"
    atoms = ase.Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    atoms.info.update(id="w-0", molecule="water", charge=0)
    atoms.write(str(bad), format="extxyz")
    assert main(["evaluate", checkpoint[0], str(bad)]) == 2
    assert "fragment_id" in capsys.readouterr().err

"""``e2former bench accuracy --quick``: the whole pipeline (set, training, evaluation, decay curves,
timing, JSON, plot) on a tiny set; checks the output is well formed, not the numbers."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from openmmml_e2former.bench import accuracy
from openmmml_e2former.data.scaling import PAIRS


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("accuracy")
    out = root / "acc.json"
    cmd = [sys.executable, "-m", "openmmml_e2former.cli", "bench", "accuracy", "--quick"]
    cmd += ["--set", str(root / "set"), "--runs", str(root / "runs"), "--out", str(out), "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), root, proc.stdout


def test_quick_run_reports_every_model_family_and_pair(quick_run):
    result, root, stdout = quick_run
    assert set(result["models"]) == set(accuracy.MODELS)
    for entry in result["models"].values():
        assert os.path.exists(entry["checkpoint"])
        assert set(entry["families"]) == {"segments", "spheres", "shells"}
        bins = entry["overall"]["bins"]
        assert bins and all(math.isfinite(b["force_mae"]) and b["structures"] > 0 for b in bins)
        assert all(0 <= b["coherent_force_mae"] < math.inf for b in bins)
        assert math.isfinite(entry["overall"]["ratio_largest_to_smallest"])
        assert all(t > 0 for t in entry["seconds_energy_forces"].values())
        assert {r["family"] for r in entry["structures"]} == set(entry["families"])
    pairs = {c["pair"] for c in result["decay_curves"]}
    assert pairs == {name for name, _, _ in PAIRS}
    for curve in result["decay_curves"]:
        assert len(curve["distance"]) == len(curve["reference"]) > 5
        assert curve["distance"] == sorted(curve["distance"])
        assert set(curve["models"]) == set(accuracy.MODELS)
    far = result["far_field"]  # the oracle's force from beyond each radius, protein families
    assert set(far["families"]) == {"segments", "spheres"}
    radii = {f"{r:g}" for r in far["radii"]}
    assert far["bins"] and all(set(b["far_mean_abs"]) == radii for b in far["bins"])
    values = [v for row in far["structures"].values() for v in row["far_mean_abs"].values()]
    assert all(math.isfinite(v) and v >= 0 for v in values) and max(values) > 0
    assert set(far["missed_fraction"]) == set(accuracy.MODELS)  # each model's share of it left out
    for bins in far["missed_fraction"].values():
        assert [b["bin"] for b in bins] == [b["bin"] for b in far["bins"]]
        assert all(set(b["missed_fraction"]) == set(b["standard_error"]) == radii for b in bins)
    assert "fraction of the force from beyond" in stdout
    names = list(accuracy.MODELS)  # every pair of models, paired on the same structures
    assert len(far["paired_difference"]) == len(names) * (len(names) - 1) // 2
    for bins in far["paired_difference"].values():
        assert [b["bin"] for b in bins] == [b["bin"] for b in far["bins"]]
        assert all(set(b["difference"]) == set(b["standard_error"]) == radii for b in bins)
    assert "(paired): difference in the share left out beyond" in stdout
    for entry in result["models"].values():  # per-atom error by crowding, small vs large pieces
        table = entry["environments"]
        assert table["training_neighbours"]["max"] >= table["training_neighbours"]["p99"] > 0
        for groups in table["families"].values():
            for group in groups.values():
                assert group["atoms"] > 0 and 0.0 <= group["fraction_beyond_training"] <= 1.0
                assert sum(b["atoms"] for b in group["bins"]) <= group["atoms"]
        charged = entry["by_charge"]  # the same rows regrouped by net charge
        counted = sum(b["structures"] for g in charged.values() for b in g["bins"])
        assert counted == sum(r["family"] in ("segments", "spheres") for r in entry["structures"])
    assert (root / "acc.png").exists() and (root / "acc_environments.png").exists()
    assert "largest/smallest" in stdout and "from beyond R" in stdout and "coherent part" in stdout


def test_family_of_ids():
    assert accuracy.family_of("1bhl-seg:3-5/f4") == "segments"
    assert accuracy.family_of("1bhl-sphere:LYS12/r5/f0") == "spheres"
    assert accuracy.family_of("shell:ACE-LYS-NME/r3/f2") == "shells"
    assert accuracy.family_of("pair:sodium-chloride/curve/d3.10") == "pairs"


def test_size_table_and_ratio_from_known_rows():
    rows = [
        {"atoms": 50, "force_mae": 0.1, "energy_error_per_atom": 0.01},
        {"atoms": 70, "force_mae": 0.3, "energy_error_per_atom": -0.03},
        {"atoms": 1000, "force_mae": 0.4, "energy_error_per_atom": 0.0},
    ]
    summary = accuracy.scaling_summary(rows)
    assert [b["bin"] for b in summary["bins"]] == ["1-80", "641-1280"]
    assert summary["smallest"]["force_mae"] == pytest.approx(0.2)
    assert summary["smallest"]["energy_mae_per_atom"] == pytest.approx(0.02)
    assert summary["ratio_largest_to_smallest"] == pytest.approx(2.0)


def test_coherent_force_error_keeps_a_push_on_a_fragment_and_drops_errors_that_cancel_within_it():
    # fragment 0 (three atoms): the same error on each atom, the whole residue pushed one way;
    # fragment 1 (two atoms): equal and opposite errors, which move no residue; fragment 2: one atom
    push = np.array([0.3, -0.6, 0.0])
    errors = np.array([push, push, push, [0.5, 0.2, -0.1], [-0.5, -0.2, 0.1], [0.0, 0.0, 0.6]])
    fragments = [7, 7, 7, 2, 2, 4]  # any labels, in any order
    # per fragment, mean |component| of its mean error: 0.3, 0 and 0.2 -> (0.9 + 0 + 0.6) / 9;
    # each fragment counts once (weighting by atoms would give (2.7 + 0 + 0.6) / 18)
    assert accuracy.coherent_force_mae(errors, fragments) == pytest.approx(1.5 / 9)

    class Piece:
        id, num_atoms, charge, energy = "1bhl-seg:3-5/f4", 6, 0, -1.0
        fragment_ids = np.array(fragments)
        forces = np.zeros((6, 3))

    (row,) = accuracy.error_rows([Piece()], {Piece.id: (-1.5, errors)})
    assert row["force_mae"] == pytest.approx((2.7 + 1.6 + 0.6) / 18)
    assert row["coherent_force_mae"] == pytest.approx(1.5 / 9)
    assert row["energy_error_per_atom"] == pytest.approx(-0.5 / 6)
    (entry,) = accuracy.size_table([row])
    assert entry["coherent_force_mae"] == pytest.approx(1.5 / 9)


def test_predictions_are_cached_per_checkpoint(tmp_path, monkeypatch):
    """A second evaluation predicts only new structures; a changed checkpoint invalidates all."""
    import numpy as np

    calls = []

    def fake(checkpoint, structures, threads=1):
        calls.append([s.id for s in structures])
        return {s.id: (1.0, np.zeros((2, 3))) for s in structures}

    class S:
        def __init__(self, i):
            self.id = i

    monkeypatch.setattr(accuracy, "predictions", fake)
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"one")
    cache = str(tmp_path / "cache" / "p.pkl")
    accuracy.cached_predictions(cache, str(ckpt), [S("a"), S("b")])
    out = accuracy.cached_predictions(cache, str(ckpt), [S("a"), S("b"), S("c")])
    assert calls == [["a", "b"], ["c"]] and set(out) == {"a", "b", "c"}
    ckpt.write_bytes(b"two")
    accuracy.cached_predictions(cache, str(ckpt), [S("a")])
    assert calls[-1] == ["a"]


def test_decay_tail_shape_ignores_a_constant_offset():
    """A model whose pair energies are the reference's + 0.5 eV everywhere: its interaction
    energies are off by 0.5 eV (500 meV) but the tail's shape is exact (0 meV)."""

    class S:
        def __init__(self, i, energy):
            self.id, self.energy = i, energy

    pair = "pair:test"
    distances = [3.0, 4.0, 6.0, 10.0, 20.0]
    reference = {f"{pair}/curve/d{d:.2f}": -14.4 / d for d in distances}
    structures = [S(i, e) for i, e in reference.items()]
    structures += [S(f"{pair}/monomer-A", 0.0), S(f"{pair}/monomer-B", 0.0)]
    model = {s.id: (s.energy + (0.5 if "curve" in s.id else 0.0), None) for s in structures}
    (curve,) = accuracy.decay_curves(structures, {"m": model})
    assert curve["distance"] == distances
    assert curve["models"]["m"]["mae_beyond_meV"] == pytest.approx(500.0)
    assert curve["models"]["m"]["tail_shape_mae_beyond_meV"] == pytest.approx(0.0, abs=1e-9)


def test_longer_training_runs_in_its_own_folder(tmp_path):
    """``--epochs N`` (converging runs) must not overwrite the committed short runs."""
    from openmmml_e2former.bench.accuracy import TRAINING, training_config

    root = os.path.join(os.path.dirname(__file__), "..", "datasets", "scaling")
    short = training_config("local-5A", root, "oracle", str(tmp_path))
    longer = training_config("local-5A", root, "oracle", str(tmp_path), epochs=TRAINING["epochs"] + 24)
    assert short["training"]["epochs"] == TRAINING["epochs"]
    assert short["training"]["output"] == os.path.join(str(tmp_path), "oracle-local-5A")
    assert longer["training"]["epochs"] == TRAINING["epochs"] + 24
    assert longer["training"]["output"] == os.path.join(
        str(tmp_path), f"oracle-local-5A-e{TRAINING['epochs'] + 24}"
    )


def test_trained_on_set_reads_the_checkpoints_data_paths(monkeypatch):
    # checkpoint data paths are relative to the repository root, where the benchmark runs
    monkeypatch.chdir(os.path.join(os.path.dirname(__file__), ".."))
    oracle_run = "benchmarks/results/accuracy_runs/oracle-lsr-5A-e30/best.pt"
    assert accuracy.trained_on_set(oracle_run, "datasets/scaling")
    assert not accuracy.trained_on_set(oracle_run, "datasets/scal")  # a prefix is no folder
    # the shipped potential was trained on datasets/gfn2-*, not on the set
    assert not accuracy.trained_on_set("openmmml_e2former/potentials/e2former-lsr.pt", "datasets/scaling")

"""scripts/ship_potential.py: the training curve joins stages from run folders and from an earlier
metrics file (a workspace that no longer holds the earlier run folders)."""

from __future__ import annotations

import csv
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import ship_potential  # noqa: E402


def _write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_curve_from_metrics_stages_and_a_run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _write_csv(run / "steps.csv", [{"step": s, "loss": 1.0 / s} for s in range(1, 21)])
    epochs = [
        {"epoch": e, "step": 10 * e, "val_force_mae": 0.1 / e, "val_energy_mae": 0.05 / e} for e in (1, 2)
    ]
    _write_csv(run / "epochs.csv", epochs)
    shipped = os.path.join(ROOT, "openmmml_e2former", "potentials", "e2former-lsr.metrics.json")
    with open(shipped) as handle:
        earlier = json.load(handle)["stages"]
    assert earlier and all("epochs" in stage for stage in earlier)
    out = tmp_path / "curve.png"
    starts = ship_potential.plot_curve(
        [*earlier, str(run)], str(out), [f"s{k}" for k in range(len(earlier) + 1)]
    )
    assert out.exists()
    # each stage starts where the one before ended: at its last epoch's step (metrics stages have
    # no per-step log), so the run folder's steps follow the shipped stages' total
    ends = [int(stage["epochs"][-1]["step"]) for stage in earlier]
    assert starts == [sum(ends[:k]) for k in range(len(earlier) + 1)]


def test_shipping_a_run_again_replaces_its_stage():
    earlier = [{"run": "runs/a", "epochs": []}, {"run": "runs/b", "epochs": []}]
    joined = ship_potential.join_stages(earlier, ["runs/b", "runs/c"])
    assert joined == [earlier[0], "runs/b", "runs/c"]
    assert ship_potential.join_stages(earlier, ["runs/c"]) == [*earlier, "runs/c"]


def test_model_card_takes_records_of_the_file_the_weights_were_shipped_from(tmp_path):
    """A candidate's stability run names its own file's digest; once shipped (same weights, new
    metadata, so a new digest) the card must still take it, and still skip other weights."""
    import write_model_card

    from openmmml_e2former.checkpoints import file_sha256, load_checkpoint, save_checkpoint

    candidate = "b" * 64
    model, _ = load_checkpoint(os.path.join(ROOT, "openmmml_e2former", "potentials", "e2former-lsr.pt"))
    shipped = tmp_path / "shipped.pt"
    save_checkpoint(model, str(shipped), {"weights_from": {"file": "runs/x/best.pt", "sha256": candidate}})
    _, meta = load_checkpoint(str(shipped))
    digests = write_model_card.weights_digests(str(shipped), meta)
    assert digests == {file_sha256(str(shipped)), candidate}
    plain = tmp_path / "plain.pt"
    save_checkpoint(model, str(plain), {})
    assert write_model_card.weights_digests(str(plain), {}) == {file_sha256(str(plain))}

    records = tmp_path / "records"
    records.mkdir()
    named = [("shipped", file_sha256(str(shipped))), ("candidate", candidate), ("older", "c" * 64)]
    for name, digest in named:
        (records / f"{name}.json").write_text(json.dumps({"weights_sha256": digest}))
    assert sorted(write_model_card.stability_records(str(records), digests)) == ["candidate", "shipped"]

    # the long run's summary, as the committed candidate run wrote it, with the candidate's digest
    run = tmp_path / "run"
    run.mkdir()
    summary_path = os.path.join(ROOT, "stability", "villin-20ps-hcons-al5-run", "stability-summary.json")
    with open(summary_path) as handle:
        summary = json.load(handle)
    summary["weights_sha256"] = candidate
    (run / "stability-summary.json").write_text(json.dumps(summary))
    taken = write_model_card._long_run(str(run), digests)
    assert "steps of 1 fs" in taken and "other weights" not in taken
    assert "other weights" in write_model_card._long_run(str(run), {file_sha256(str(plain))})

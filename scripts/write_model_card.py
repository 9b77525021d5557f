"""Write ``openmmml_e2former/potentials/e2former-lsr.md`` from the shipped checkpoint's metrics.

Usage: ``python scripts/write_model_card.py [--stability runs/stability]``. Numbers come from
``e2former-lsr.metrics.json`` (written by scripts/ship_potential.py), the training config and the
stability JSON files, so the card and the checkpoint cannot disagree.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import yaml

from openmmml_e2former.checkpoints import load_checkpoint
from openmmml_e2former.train.metrics import format_table

POT = "openmmml_e2former/potentials"


def _stability(folder: str) -> str:
    lines = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as handle:
            r = json.load(handle)
        if "drift_kj_mol_per_ps" in r:
            lines.append(
                f"* **NVE, ML only** ({r['system']}, {r['atoms']} atoms, {r['steps']} steps of "
                f"{r['timestep_fs']} fs, {r['precision']} precision, `{r['command']}`): total-energy drift "
                f"{r['drift_kj_mol_per_ps']:.3g} kJ/mol/ps "
                f"({r['drift_kj_mol_per_ps_per_atom']:.3g} kJ/mol/ps per atom), total-energy standard "
                f"deviation {r['total_energy_std_kj_mol']:.3g} kJ/mol, mean temperature "
                f"{r['mean_temperature_k']:.0f} K, {r['seconds']} s wall."
            )
        else:
            rows = r["rows"]
            last = rows[-1]
            worst = max(row["max_bond_change"] for row in rows)
            temps = [row["temperature_k"] for row in rows]
            lines.append(
                f"* **Villin ML/MM** ({r['system']}, {r['ml_atoms']} ML atoms, Langevin 300 K, 1 fs, "
                f"{r['precision']} precision, `{r['command']}`): ran {last['step']} steps "
                f"({last['step'] / 1000:.2f} ps) in {last['seconds']} s; all positions finite: "
                f"{all(row['finite'] for row in rows)}; largest relative change of a protein bond length "
                f"{worst:.3f}; temperature {min(temps):.0f}-{max(temps):.0f} K over the reports."
            )
    return "\n".join(lines) or "* (no stability run recorded)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stability", default="runs/stability")
    parser.add_argument("--config", default="configs/e2former-lsr.yaml")
    args = parser.parse_args()
    with open(os.path.join(POT, "e2former-lsr.metrics.json")) as handle:
        m = json.load(handle)
    with open(args.config) as handle:
        config = yaml.safe_load(handle)
    model, meta = load_checkpoint(os.path.join(POT, "e2former-lsr.pt"))
    size_mb = os.path.getsize(os.path.join(POT, "e2former-lsr.pt")) / 1e6
    params = sum(p.numel() for p in model.parameters())
    d = m["data"]
    test, val, sub = m["test"]["overall"], m["val"]["overall"], m["test_subset"]
    epochs = m["epochs"]
    template = open(os.path.join(os.path.dirname(__file__), "model_card_template.md")).read()
    text = template.format(
        size_mb=size_mb,
        params=params,
        config_json=json.dumps(model.config.to_dict(), sort_keys=True),
        training_yaml=yaml.safe_dump(config["training"], sort_keys=False).strip(),
        structures=d["structures"],
        atoms=d["atoms"],
        molecules=d["molecules"],
        groups=d["split_groups"],
        sizes=d["atoms_per_structure"],
        elements=", ".join(f"{k} {v}" for k, v in d["element_atom_counts"].items()),
        charges=", ".join(f"{k}: {v}" for k, v in d["total_charges"].items()),
        splits=", ".join(f"{k} {v}" for k, v in d["split_sizes"].items()),
        level=", ".join(d["level_of_theory"]),
        program=", ".join(d["program"]),
        label_cpu=d["label_cpu_seconds"],
        val_e=1000 * val["energy_mae"],
        val_e_rmse=1000 * val["energy_rmse"],
        val_f=val["force_mae"],
        val_f_rmse=val["force_rmse"],
        test_e=1000 * test["energy_mae"],
        test_e_rmse=1000 * test["energy_rmse"],
        test_f=test["force_mae"],
        test_f_rmse=test["force_rmse"],
        test_table=format_table(m["test"]["by_size"] + [{"atoms": "all", **test}]),
        sub_count=sub["count"],
        sub_f=sub["force_mae"],
        sub_e=1000 * sub["energy_mae"],
        best_epoch=int(meta.get("epoch", -1)) + 1,  # the trainer stores the 0-based epoch
        best_step=meta.get("step"),
        epochs_run=len(epochs),
        train_seconds=epochs[-1]["seconds"] if epochs else "?",
        epoch_rows="\n".join(
            f"| {e['epoch']} | {e['step']} | {float(e['lr']):.2e} | {float(e['train_loss']):.4f} | "
            f"{1000 * float(e['val_energy_mae']):.1f} | {float(e['val_force_mae']):.4f} |"
            for e in epochs
        ),
        stability=_stability(args.stability),
    )
    with open(os.path.join(POT, "e2former-lsr.md"), "w") as handle:
        handle.write(text)
    print(f"wrote {POT}/e2former-lsr.md")


if __name__ == "__main__":
    main()

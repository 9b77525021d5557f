"""Write ``openmmml_e2former/potentials/e2former-lsr.md`` from the shipped checkpoint's metrics.

Usage: ``python scripts/write_model_card.py [--stability runs/stability] [--long-run FOLDER ...]``.
Numbers come from ``e2former-lsr.metrics.json`` (written by scripts/ship_potential.py), the
training config, the stability JSON files and the long runs' ``stability-summary.json``
(``scripts/stability.py run-folder``), so the card and the checkpoint cannot disagree.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os

import yaml
from stability_records import unpack_for

from openmmml_e2former.checkpoints import file_sha256, load_checkpoint
from openmmml_e2former.train.metrics import format_table

POT = "openmmml_e2former/potentials"
# the shipped weights' 20 ps villin run (X-H bonds constrained), made with the round-5 candidate file
LONG_RUNS = ["stability/villin-20ps-hcons-al5-run"]
# the same protocol, seed and preparation with no ML region (``--ml none``): the fold's classical baseline
MM_REFERENCE = "stability/villin-20ps-mm-run"


def stability_records(folder: str, digests: set[str]) -> dict:
    """The stability checks of these weights: those already in ``e2former-lsr.stability.json``
    (so a fresh checkout, whose ``runs/`` is empty, loses none), updated by the JSON files in
    ``folder`` that name the same weights (checks of earlier weights are skipped). ``digests``: the
    shipped file's SHA-256 and that of the run file it was shipped from (same weights)."""
    records = {}
    committed = os.path.join(POT, "e2former-lsr.stability.json")
    if os.path.exists(committed):
        with open(committed) as handle:
            records = {k: r for k, r in json.load(handle).items() if r.get("weights_sha256") in digests}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as handle:
            record = json.load(handle)
        if record.get("weights_sha256") in digests:
            records[os.path.basename(path)[: -len(".json")]] = record
    return dict(sorted(records.items()))


def weights_digests(weights: str, meta: dict) -> set[str]:
    """The digests whose records describe the shipped weights: the shipped file's, and that of the
    file ``ship_potential.py`` shipped it from (``weights_from``; the same weights, other metadata),
    so runs made with the candidate file before it was shipped count."""
    return {file_sha256(weights), (meta.get("weights_from") or {}).get("sha256")} - {None}


def _stability(records: dict) -> str:
    lines = []
    for r in records.values():
        if "with_broken_bond" in r:
            broken = "; ".join(
                f"{b['molecule']} ({', '.join(b['broken']) or 'not finite'})" for b in r["broken"]
            )
            lines.append(
                f"* **ML-driven MD of capped peptides** ({r['molecules']} molecules, vacuum, Langevin 600 K, "
                f"1 fs, 400 steps each from AMBER-minimised starts, `{r['command']}`): "
                f"{r['with_broken_bond']} broke a bond (> 30 % change)" + (f": {broken}." if broken else ".")
            )
        elif "drift_kj_mol_per_ps" in r:
            lines.append(
                f"* **NVE, ML only** ({r['system']}, {r['atoms']} atoms, {r['steps']} steps of "
                f"{r['timestep_fs']} fs, {r['precision']} precision, `{r['command']}`): total-energy drift "
                f"{r['drift_kj_mol_per_ps']:.3g} kJ/mol/ps "
                f"({r['drift_kj_mol_per_ps_per_atom']:.3g} kJ/mol/ps per atom), total-energy standard "
                f"deviation {r['total_energy_std_kj_mol']:.3g} kJ/mol, mean temperature "
                f"{r['mean_temperature_k']:.0f} K, {r['seconds']} s wall."
            )
        elif "radius_A" in r:
            frames = "; ".join(
                f"frame {row['frame']}: median {row['median']:.2f}, largest {max(row['gaps']):.2f} "
                f"({r['residues'][row['gaps'].index(max(row['gaps']))]})"
                for row in r["frames"]
            )
            lines.append(
                f"* **Locality** (`python scripts/stability.py locality {r['folder']}`): the largest "
                f"difference (eV/Å) between the forces on a residue in the whole protein and in its "
                f"{r['radius_A']:g} Å neighbourhood alone, over the {len(r['residues'])} residues: {frames}."
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


def _errors(prefix: str, r: dict) -> dict:
    """Template fields ``<prefix>_e``, ``_e_rmse`` (meV/atom), ``_f``, ``_f_rmse`` (eV/Å)."""
    return {
        f"{prefix}_e": 1000 * r["energy_mae"],
        f"{prefix}_e_rmse": 1000 * r["energy_rmse"],
        f"{prefix}_f": r["force_mae"],
        f"{prefix}_f_rmse": r["force_rmse"],
    }


def _heldout_rows(sets: list[dict]) -> str:
    """Accuracy-table rows of the held-out sets (``ship_potential.py --heldout``)."""
    rows = []
    for h in [sets] if isinstance(sets, dict) else sets:  # one dict: metrics written before round 2
        e = _errors("h", h["overall"])
        name = f"held-out: {h.get('label', 'ML-MD frames')} ({h['overall']['count']}, `{h['file']}`)"
        values = f"{e['h_e']:.2f} | {e['h_e_rmse']:.2f} | {e['h_f']:.4f} | {e['h_f_rmse']:.4f}"
        rows.append(f"| {name} | {values} |")
    return "\n".join(rows)


def _epoch_rows(epochs: list[dict]) -> str:
    head = [
        "| epoch | step | lr | train loss | val E MAE (meV/atom) | val F MAE (eV/Å) |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(
        head
        + [
            f"| {e['epoch']} | {e['step']} | {float(e['lr']):.2e} | {float(e['train_loss']):.4f} | "
            f"{1000 * float(e['val_energy_mae']):.1f} | {float(e['val_force_mae']):.4f} |"
            for e in epochs
        ]
    )


def _long_run(folder: str, digests: set[str]) -> str:
    """The 20 ps villin run's state, from its ``stability-summary.json``."""
    path = os.path.join(folder, "stability-summary.json")
    if not os.path.exists(path):
        return f"* **Villin ML/MM, 20 ps** (`{folder}`): not run yet with these weights."
    with open(path) as handle:
        r = json.load(handle)
    if r.get("weights_sha256") not in digests:
        return f"* **Villin ML/MM, 20 ps** (`{folder}`): its recorded run used other weights; rerun it."
    t = r["temperature_k_after_skip"]
    kept = {True: "X-H bonds constrained", False: "flexible"}.get(r.get("ml_constraints_kept"), "flexible")
    if t["mean"] is None:
        return (
            f"* **Villin ML/MM, 20 ps** (`stability/{r.get('protocol', 'villin-20ps')}.yaml`, run folder "
            f"`{folder}`, ML region {kept}): started, {r['steps_done']} steps so far (< {t['skip_ps']} ps)."
        )
    done = "finished" if r["steps_done"] >= r["steps_planned"] else "**in progress**"
    platform = ", ".join(r.get("platforms") or ["CPU"])  # no sessions.json: the early CPU runs
    if r.get("guard_stop"):
        done = "**stopped by the bond guard**, see below"
    return (
        f"* **Villin ML/MM, 20 ps** (`stability/{r.get('protocol', 'villin-20ps')}.yaml`, "
        f"run folder `{folder}`, {done}): {r['steps_done']} of {r['steps_planned']} steps of 1 fs "
        f"({r['time_ps']:.2f} ps), Langevin 300 K, {r['ml_atoms']} ML atoms ({kept}) + AMBER14/TIP3P-FB "
        f"water and ions, {platform}. All energies and frames finite: {r['finite']}; temperature after the "
        f"first {t['skip_ps']:g} ps: mean "
        f"{t['mean']:.0f} K, range {t['min']:.0f}-{t['max']:.0f} K; largest relative change of an "
        f"ML-region bond length against the prepared (PDB) geometry over the {r['frames']} saved frames: "
        f"{r['max_bond_change']:.3f} "
        f"({'-'.join(r['max_bond_change_atoms'])}) "
        f"(`{r['command']}`)." + _broken(r) + (f" Guard: {r['guard_stop']}" if r.get("guard_stop") else "")
    ) + _fold(folder)


def _fold(folder: str) -> str:
    """The fold's drift from the run's ``e2former analyze`` report, if it has one."""
    path = os.path.join(folder, "analysis", "summary.json")
    if not os.path.exists(path):
        return ""
    with open(path) as handle:
        a = json.load(handle)
    with open(os.path.join(folder, "analysis", "frames.csv")) as handle:
        rows = list(csv.DictReader(handle))
    return (
        f" Fold (`e2former analyze {folder}`, {a['frames']} frames): backbone RMSD to the first frame "
        f"{a['rmsd_first']['last']:.1f} Å at the end (max {a['rmsd_first']['max']:.1f} Å); helix fraction "
        f"{float(rows[0]['ss_helix']):.2f} in the first frame, {a['ss_helix']['last']:.2f} in the last."
    )


def _mm_reference(folder: str) -> str:
    if not os.path.exists(os.path.join(folder, "analysis", "summary.json")):
        return f"* Classical baseline (`{folder}`): not run."
    return (
        f"* **Classical baseline**: the same protocol and seed with no ML region (the same protein, "
        f"water and ions placed anew) "
        f"(`e2former run stability/villin-20ps-hcons.yaml --pdb stability/villin_protein.pdb --ml none "
        f"-o {folder} --analyze`), AMBER14 for the protein." + _fold(folder)
    )


def _broken(r: dict) -> str:
    if not r.get("broken_bonds"):
        limit = 100 * r["broken_threshold"]
        return f" In the saved frames no ML-region bond changed by more than {limit:.0f} %."
    items = "; ".join(f"{'-'.join(b['atoms'])} from {b['first_frame_ps']} ps" for b in r["broken_bonds"])
    return (
        f" **Bonds broke** (changed by more than {100 * r['broken_threshold']:.0f} %): {items}. "
        "The potential fails this check; see Known limits."
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stability", default="runs/stability")
    parser.add_argument(
        "--long-run", action="append", help=f"long-run folder, repeatable (default: {' '.join(LONG_RUNS)})"
    )
    parser.add_argument("--config", default="configs/e2former-lsr-al5.yaml", help="the shipped stage config")
    args = parser.parse_args()
    for folder in (args.long_run or LONG_RUNS) + [MM_REFERENCE]:
        unpack_for(folder)  # stability/ run records keep their frames packed
    with open(os.path.join(POT, "e2former-lsr.metrics.json")) as handle:
        m = json.load(handle)
    with open(args.config) as handle:
        config = yaml.safe_load(handle)
    weights = os.path.join(POT, "e2former-lsr.pt")
    model, meta = load_checkpoint(weights)
    digests = weights_digests(weights, meta)
    records = stability_records(args.stability, digests)
    size_mb = os.path.getsize(weights) / 1e6
    params = sum(p.numel() for p in model.parameters())
    d = m["data"]
    test, val, sub, train = m["test"]["overall"], m["val"]["overall"], m["test_subset"], m["train_subset"]
    epochs = m["epochs"]
    template = open(os.path.join(os.path.dirname(__file__), "model_card_template.md")).read()
    text = template.format(
        size_mb=size_mb,
        params=params,
        config_json=json.dumps(model.config.to_dict(), sort_keys=True),
        training_yaml=yaml.safe_dump(config["training"], sort_keys=False).strip(),
        epoch_rows=_epoch_rows(epochs),
        structures=d["structures"],
        atoms=d["atoms"],
        molecules=d["molecules"],
        groups=d["split_groups"],
        sizes=d["atoms_per_structure"],
        elements=", ".join(f"{k} {v}" for k, v in d["element_atom_counts"].items()),
        charges=", ".join(f"{k}: {v}" for k, v in d["total_charges"].items()),
        charge_range=f"{min(map(int, d['total_charges'])):+d} to {max(map(int, d['total_charges'])):+d}",
        high_charge=sum(n for q, n in d["total_charges"].items() if abs(int(q)) >= 4),
        splits=", ".join(f"{k} {v}" for k, v in d["split_sizes"].items()),
        level=", ".join(d["level_of_theory"]),
        program=", ".join(d["program"]),
        label_cpu=d["label_cpu_seconds"],
        train_every=train["every"],
        train_count=train["count"],
        **_errors("train", train),
        **_errors("val", val),
        **_errors("test", test),
        heldout_rows=_heldout_rows(m.get("heldout", [])),
        test_table=format_table(m["test"]["by_size"] + [{"atoms": "all", **test}]),
        target_verdict="reached" if test["force_mae"] <= 0.05 else "**not** reached",
        sub_count=sub["count"],
        sub_f=sub["force_mae"],
        sub_e=1000 * sub["energy_mae"],
        best_epoch=int(meta.get("epoch", -1)) + 1,  # the trainer stores the 0-based epoch
        best_step=meta.get("step"),
        epochs_run=len(epochs),
        stability=_stability(records),
        long_run="\n".join(_long_run(folder, digests) for folder in args.long_run or LONG_RUNS)
        + "\n"
        + _mm_reference(MM_REFERENCE),
    )
    with open(os.path.join(POT, "e2former-lsr.md"), "w") as handle:
        handle.write(text)
    with open(os.path.join(POT, "e2former-lsr.stability.json"), "w") as handle:
        json.dump(records, handle, indent=1)
    print(f"wrote {POT}/e2former-lsr.md")


if __name__ == "__main__":
    main()

"""``e2former analyze``: compute every observable of a run, plot it, and write the report.

Outputs (default ``RUN_DIR/analysis``): one PNG per observable, ``summary.json``
(scalars, stage timings, preparation), ``frames.csv`` (per-frame values) and
``report.html``, a single self-contained page with the plots embedded as base64 PNGs.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os

import numpy as np

from ..chemistry import is_water_or_ion
from . import metrics, plots
from .run_data import load_run

NM_TO_ANGSTROM = 10.0


def say(message: str) -> None:
    print(f"[e2former analyze] {message}", flush=True)


def analyze_run(folder: str, output: str | None = None) -> dict:
    """Analyse a run folder; return the summary dict (also written as ``summary.json``)."""
    output = output or os.path.join(folder, "analysis")
    os.makedirs(output, exist_ok=True)
    say(f"loading {folder}")
    run = load_run(folder)
    frames = compute_frames(run)
    say(f"{run.traj.n_frames} frames, {len(frames['solute_atoms'])} solute atoms; plotting")
    figures = make_plots(run, frames, output)
    summary = summarize(run, frames)
    _write_json(os.path.join(output, "summary.json"), summary)
    _write_frames_csv(os.path.join(output, "frames.csv"), run, frames)
    page = os.path.join(output, "report.html")
    _write_text(page, render_html(run, summary, figures))
    say(f"wrote {page} ({len(figures)} plots), summary.json, frames.csv")
    return summary


def solute_indices(topology, ligand: str | None = None) -> np.ndarray:
    """The protein atoms (and the ligand's, when the run has one), else everything that is not
    water or a monatomic ion."""
    protein = topology.select("protein" if not ligand else f"protein or resname {ligand}")
    if len(protein):
        return protein
    return np.array([a.index for a in topology.atoms if not is_water_or_ion(a.residue.name)], dtype=int)


def compute_frames(run) -> dict:
    """Every per-frame and per-residue observable of the run's solute (lengths in Å)."""
    ligand = run.ml_info.get("ligand")
    solute = solute_indices(run.traj.topology, ligand)
    traj = run.traj.atom_slice(solute)
    backbone = traj.topology.select("backbone")
    align = backbone if len(backbone) else np.arange(traj.n_atoms)
    fitted = metrics.image_and_superpose(traj, align)
    result = {"solute_atoms": solute, "align_atoms": align}
    result["rmsd_first"] = NM_TO_ANGSTROM * metrics.rmsd(fitted, fitted, align)
    pose = traj.topology.select(f"resname {ligand} and not element H") if ligand else []
    if len(pose) and len(backbone):  # the ligand where the backbone fit puts it: its pose in the pocket
        result["ligand_atoms"] = pose
        result["rmsd_ligand_first"] = NM_TO_ANGSTROM * metrics.rmsd(fitted, fitted, pose, superpose=False)
    if run.minimized is not None:
        reference = run.minimized.atom_slice(solute)
        result["rmsd_minimized"] = NM_TO_ANGSTROM * metrics.rmsd(fitted, reference, align)
        if "ligand_atoms" in result:
            fitted_reference = reference.superpose(fitted, 0, atom_indices=align)
            result["rmsd_ligand"] = NM_TO_ANGSTROM * metrics.rmsd(
                fitted, fitted_reference, pose, superpose=False
            )
    ml_local = np.flatnonzero(np.isin(solute, run.ml_atoms))
    if len(ml_local) >= 3:
        ml_fitted = fitted[:]
        ml_fitted.superpose(ml_fitted, 0, atom_indices=ml_local)
        result["rmsd_ml"] = NM_TO_ANGSTROM * metrics.rmsd(ml_fitted, ml_fitted, ml_local)
    result["ml_local"] = ml_local
    result["rg"] = NM_TO_ANGSTROM * metrics.radius_of_gyration(fitted)
    if traj.topology.select("name CA").size:
        residues, values = metrics.residue_rmsf(fitted)
        result["rmsf_residues"], result["rmsf"] = residues, NM_TO_ANGSTROM * values
        codes = metrics.secondary_structure(fitted)
        result["dssp"] = codes
        result.update({f"ss_{k}": v for k, v in metrics.secondary_structure_fractions(codes).items()})
    result["hbonds"] = metrics.hydrogen_bond_counts(fitted)
    result["sasa"] = metrics.sasa(fitted)
    return result


def make_plots(run, frames: dict, output: str) -> dict[str, str]:
    """Write the PNGs; return {title: path}."""
    t, stage = run.frame_time_ps, run.frame_stage
    figures = {}

    def add(title, name, fn, *args):
        figures[title] = fn(os.path.join(output, name), *args)

    rmsd = {"vs first frame": frames["rmsd_first"]}
    if "rmsd_minimized" in frames:
        rmsd["vs minimised structure"] = frames["rmsd_minimized"]
    if "rmsd_ml" in frames:
        rmsd["ML region (own fit)"] = frames["rmsd_ml"]
    ligand = "rmsd_ligand" if "rmsd_ligand" in frames else "rmsd_ligand_first"
    if ligand in frames:
        rmsd[
            f"ligand heavy atoms in the pocket ({'vs minimised' if ligand == 'rmsd_ligand' else 'vs first'})"
        ] = frames[ligand]
    add("RMSD", "rmsd.png", plots.time_series, t, stage, rmsd, "RMSD (Å)", "RMSD (backbone fit)")
    if "rmsf" in frames:
        ml_res = {run.traj.topology.atom(int(i)).residue.resSeq for i in run.ml_atoms}
        add("RMSF", "rmsf.png", plots.rmsf_plot, frames["rmsf_residues"], frames["rmsf"], sorted(ml_res))
        add(
            "Secondary structure",
            "dssp.png",
            plots.secondary_structure_plot,
            t,
            frames["dssp"],
            frames["rmsf_residues"],
        )
    add(
        "Radius of gyration",
        "rg.png",
        plots.time_series,
        t,
        stage,
        {"Rg": frames["rg"]},
        "Rg (Å)",
        "radius of gyration",
    )
    add(
        "Hydrogen bonds",
        "hbonds.png",
        plots.time_series,
        t,
        stage,
        {"H-bonds": frames["hbonds"]},
        "count",
        "intra-solute hydrogen bonds (Wernet-Nilsson)",
    )
    add(
        "SASA",
        "sasa.png",
        plots.time_series,
        t,
        stage,
        {"SASA": frames["sasa"]},
        "nm²",
        "solvent-accessible surface area",
    )
    if run.state:
        add(
            "Energy, temperature, volume, density",
            "thermo.png",
            plots.thermo_plot,
            run.state,
            run.state_stage,
        )
    return figures


def summarize(run, frames: dict) -> dict:
    """Scalars for summary.json: last values, means, per-stage state averages, timings."""
    summary = {
        "run": os.path.abspath(run.folder),
        "frames": int(run.traj.n_frames),
        "solute_atoms": int(len(frames["solute_atoms"])),
        "ml_atoms": len(run.ml_atoms),
        "random_weights": bool(run.ml_info.get("random_weights", False)),
    }
    if "ligand_atoms" in frames:
        summary["ligand"] = run.ml_info.get("ligand")
    keys = ("rmsd_first", "rmsd_minimized", "rmsd_ml", "rmsd_ligand", "rmsd_ligand_first", "rg", "hbonds")
    for key in (*keys, "sasa", "ss_helix"):
        if key in frames:
            values = np.asarray(frames[key], dtype=float)
            summary[key] = {
                "last": float(values[-1]),
                "mean": float(values.mean()),
                "max": float(values.max()),
            }
    if "rmsf" in frames:
        summary["rmsf_max_angstrom"] = float(np.max(frames["rmsf"]))
    summary["stages"] = _stage_table(run)
    for name in ("prepare.json", "timings.json"):
        path = os.path.join(run.folder, name)
        if os.path.isfile(path):
            with open(path) as handle:
                summary[name[:-5]] = json.load(handle)
    return summary


def _stage_table(run) -> list[dict]:
    rows = []
    for stage in run.stages:
        row = {"name": stage["name"], "type": stage["type"], "done": stage["done"]}
        mask = run.state_stage == stage["name"]
        if stage["type"] == "md" and mask.any():
            row["ensemble"] = stage["ensemble"]
            for key in ("temperature_K", "density_g_ml", "volume_nm3", "potential_kj_mol"):
                row[f"mean_{key}"] = float(run.state[key][mask].mean())
            row["target_temperature_K"] = stage["temperature_K"][-1]
        done = os.path.join(stage["dir"], "done.json")
        if os.path.isfile(done):
            with open(done) as handle:
                record = json.load(handle)
            row["wall_s"] = record.get("wall_s")
            row["ns_per_day"] = record.get("ns_per_day")
        rows.append(row)
    return rows


def render_html(run, summary: dict, figures: dict[str, str]) -> str:
    """One self-contained HTML page: banner, tables, and every PNG inlined as base64."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>e2former run report</title>",
        "<style>body{font-family:sans-serif;margin:1.5em;max-width:1300px}table{border-collapse:collapse;"
        "margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}"
        "th{background:#f0f0f0}"
        ".warn{background:#fff3cd;border:2px solid #e0a800;padding:.6em;font-weight:bold}"
        ".grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0}figcaption{font-size:13px}</style>",
        "</head><body>",
        f"<h1>E2Former run report</h1><p>{html.escape(summary['run'])}: {summary['frames']} frames, "
        f"{summary['solute_atoms']} solute atoms, ML region {summary['ml_atoms']} atoms "
        f"({html.escape(str(run.ml_info.get('selection', 'none')))})</p>",
    ]
    if summary["random_weights"]:
        parts.append(
            "<p class='warn'>The ML region ran on a seeded RANDOM network (no trained weights were "
            "available): these numbers test the pipeline, not the physics.</p>"
        )
    parts.append(_table(summary["stages"], "Stages"))
    scalars = [{"observable": k, **v} for k, v in summary.items() if isinstance(v, dict) and "last" in v]
    parts.append(_table(scalars, "Observables (Å, nm², counts, fractions)"))
    if "prepare" in summary:
        lines = os.path.join(run.folder, "prepare.txt")
        if os.path.isfile(lines):
            with open(lines) as handle:
                parts.append(f"<h2>Preparation</h2><pre>{html.escape(handle.read())}</pre>")
    parts.append("<h2>Plots</h2><div class='grid'>")
    for title, path in figures.items():
        with open(path, "rb") as handle:
            data = base64.b64encode(handle.read()).decode("ascii")
        parts.append(
            f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(title)}</figcaption></figure>"
        )
    parts.append("</div></body></html>")
    return "\n".join(parts)


def _table(rows: list[dict], title: str) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(k))}</td>" for k in keys) + "</tr>" for row in rows)
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else html.escape(str(value))


def _write_frames_csv(path: str, run, frames: dict) -> None:
    keys = [
        k
        for k in (
            "rmsd_first",
            "rmsd_minimized",
            "rmsd_ml",
            "rmsd_ligand",
            "rmsd_ligand_first",
            "rg",
            "hbonds",
            "sasa",
            "ss_helix",
            "ss_strand",
            "ss_coil",
        )
        if k in frames
    ]
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame", "stage", "time_ps"] + keys)
        for i in range(run.traj.n_frames):
            writer.writerow(
                [i, run.frame_stage[i], f"{run.frame_time_ps[i]:.4f}"]
                + [f"{float(frames[k][i]):.5g}" for k in keys]
            )
    os.replace(tmp, path)


def _write_json(path: str, data) -> None:
    _write_text(path, json.dumps(data, indent=1, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)

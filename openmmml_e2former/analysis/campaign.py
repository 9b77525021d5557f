"""The report of a campaign: one table and plots across its runs, from files only.

Reads ``<campaign>/campaign.json`` (the runs and their status, written by ``e2former campaign``)
and each finished run's ``analysis/summary.json`` (``e2former analyze``). Writes, next to the
run folders, ``campaign-report.html`` (self-contained), ``campaign-summary.json`` and
``campaign-runs.csv``: per run the final RMSD, largest RMSF, Rg, helix fraction, temperature of
the last MD stage, ns/day and its status (with the error of a failed run); replicas of one input
grouped with mean ± standard deviation.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os

import numpy as np

#: column -> (header, how to read it from a run's summary.json)
COLUMNS = {
    "rmsd": ("final RMSD (Å)", lambda s: _last(s, "rmsd_minimized") or _last(s, "rmsd_first")),
    "rmsd_ligand": ("ligand RMSD (Å)", lambda s: _last(s, "rmsd_ligand")),
    "rmsf_max": ("max RMSF (Å)", lambda s: s.get("rmsf_max_angstrom")),
    "rg": ("final Rg (Å)", lambda s: _last(s, "rg")),
    "helix": ("final helix fraction", lambda s: _last(s, "ss_helix")),
    "temperature": ("T last MD stage (K)", lambda s: _last_md(s, "mean_temperature_K")),
    "ns_per_day": ("ns/day (last MD stage)", lambda s: _last_md(s, "ns_per_day")),
}


def _last(summary: dict, key: str):
    value = summary.get(key)
    return value.get("last") if isinstance(value, dict) else None


def _last_md(summary: dict, key: str):
    values = [row.get(key) for row in summary.get("stages", []) if row.get("type") == "md" and row.get(key)]
    return values[-1] if values else None


def campaign_rows(folder: str) -> tuple[dict, list[dict]]:
    """(campaign.json, one row per run: name, group, status, error and the COLUMNS values)."""
    with open(os.path.join(folder, "campaign.json")) as handle:
        record = json.load(handle)
    rows = []
    for run in record["runs"]:
        result = record["results"].get(run["name"], {"status": "not run"})
        row = {
            "name": run["name"],
            "group": run["group"],
            "status": result["status"],
            "error": result.get("error"),
        }
        path = os.path.join(run["folder"], "analysis", "summary.json")
        if result["status"] in ("done", "skipped") and os.path.isfile(path):
            with open(path) as handle:
                summary = json.load(handle)
            row.update({key: read(summary) for key, (_, read) in COLUMNS.items()})
        rows.append(row)
    return record, rows


def group_statistics(rows: list[dict]) -> list[dict]:
    """Per input (group): number of finished runs and mean ± standard deviation of each column."""
    out = []
    for group in dict.fromkeys(r["group"] for r in rows):
        members = [r for r in rows if r["group"] == group]
        entry = {
            "group": group,
            "runs": len(members),
            "finished": sum(r["status"] in ("done", "skipped") for r in members),
        }
        for key in COLUMNS:
            values = np.array([r[key] for r in members if r.get(key) is not None], dtype=float)
            if len(values):
                entry[key] = {
                    "mean": float(values.mean()),
                    "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "n": len(values),
                }
        out.append(entry)
    return out


def write_campaign_report(folder: str) -> str:
    """Write the report files into ``folder``; return the HTML page's path."""
    record, rows = campaign_rows(folder)
    groups = group_statistics(rows)
    summary = {"name": record["name"], "runs": rows, "groups": groups}
    summary["counts"] = {
        s: sum(r["status"] == s for r in rows) for s in ("done", "skipped", "failed", "not run")
    }
    _atomic(os.path.join(folder, "campaign-summary.json"), json.dumps(summary, indent=1))
    keys = ["name", "group", "status", *COLUMNS, "error"]
    tmp = os.path.join(folder, "campaign-runs.csv.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, os.path.join(folder, "campaign-runs.csv"))
    plot = _plot(rows, os.path.join(folder, "campaign-runs.png"))
    page = os.path.join(folder, "campaign-report.html")
    _atomic(page, _html(record["name"], rows, groups, plot))
    return page


def _plot(rows: list[dict], path: str) -> str | None:
    """One panel per column: each run's value as a dot, grouped by input, with the group mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [k for k in COLUMNS if any(r.get(k) is not None for r in rows)]
    if not shown:
        return None
    groups = list(dict.fromkeys(r["group"] for r in rows))
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4), squeeze=False)
    for ax, key in zip(axes[0], shown, strict=True):
        for x, group in enumerate(groups):
            values = [r[key] for r in rows if r["group"] == group and r.get(key) is not None]
            ax.scatter([x] * len(values), values, color="tab:blue", s=18, zorder=3)
            if values:
                ax.hlines(np.mean(values), x - 0.3, x + 0.3, color="black", lw=1.5)
        ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize=8)
        ax.set_title(COLUMNS[key][0], fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle("runs (dots) and the mean of each input's replicas (bar)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _format(value) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if isinstance(value, float) else html.escape(str(value))


def _html(name: str, rows: list[dict], groups: list[dict], plot: str | None) -> str:
    shown = [k for k in COLUMNS if any(r.get(k) is not None for r in rows)]  # no empty columns
    headers = [COLUMNS[k][0] for k in shown]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["run", "input", "status", *headers])
    body = []
    for r in rows:
        status = html.escape(r["status"]) + (
            f"<br><small>{html.escape(r['error'])}</small>" if r.get("error") else ""
        )
        cells = [html.escape(r["name"]), html.escape(r["group"]), status, *(_format(r.get(k)) for k in shown)]
        style = ' class="failed"' if r["status"] == "failed" else ""
        body.append(f"<tr{style}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    ghead = "".join(f"<th>{html.escape(h)}</th>" for h in ["input", "finished/runs", *headers])
    gbody = []
    for g in groups:
        cells = [
            html.escape(g["group"]),
            f"{g['finished']}/{g['runs']}",
            *(_mean_sd(g.get(k)) for k in shown),
        ]
        gbody.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    image = ""
    if plot:
        with open(plot, "rb") as handle:
            data = base64.b64encode(handle.read()).decode()
        image = f'<img alt="runs" src="data:image/png;base64,{data}">'
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>campaign {html.escape(name)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}tr.failed{background:#fdd}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>Campaign {html.escape(name)}</h1><h2>Runs</h2><table><tr>{head}</tr>{''.join(body)}</table>"
        "<h2>By input (mean ± standard deviation over replicas)</h2>"
        f"<table><tr>{ghead}</tr>{''.join(gbody)}</table>"
        f"{image}<p>Each run's own report: RUN/analysis/report.html.</p></body></html>"
    )


def _mean_sd(stat: dict | None) -> str:
    if not stat:
        return ""
    if stat["n"] == 1:
        return f"{stat['mean']:.3g} (one run)"
    return f"{stat['mean']:.3g} ± {stat['std']:.2g} (n = {stat['n']})"


def _atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)

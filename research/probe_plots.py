"""Figures shared by the research probes: the potential's and its reference's energy curves, one
panel per result file. Imported by the scripts beside it (run as ``python research/<script>.py``)."""

from __future__ import annotations

import glob
import json
import os


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def energy_curves(ax, x, rows: list[dict], reference: str) -> None:
    """The reference's and the potential's energies of a probe's ``rows`` along ``x``."""
    ax.plot(x, [r["reference_energy"] for r in rows], "o-", label=reference)
    ax.plot(x, [r["model_energy"] for r in rows], "s--", label="E2Former-LSR (shipped)")


def save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def panels(
    folder: str, pattern: str, draw, ylabel: str, name: str, width: float, legend: int, sharey: bool = False
) -> str:
    """One panel per JSON file matching ``pattern`` in ``folder`` (``draw(ax, result)`` fills it),
    saved as ``folder/name``; returns that path."""
    paths = sorted(glob.glob(os.path.join(folder, pattern)))
    if not paths:
        raise SystemExit(f"no {pattern} in {folder}: run the probe first")
    fig, axes = pyplot().subplots(
        1, len(paths), figsize=(width * len(paths), 3.2), squeeze=False, sharey=sharey
    )
    for ax, path in zip(axes[0], paths, strict=True):
        with open(path) as handle:
            draw(ax, json.load(handle))
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=legend)
    return save(fig, os.path.join(folder, name))

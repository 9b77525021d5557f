"""Matplotlib figures of the analysis (PNG files); the numbers come from ``metrics`` and ``run_data``."""

from __future__ import annotations

import numpy as np

SS_COLORS = {"H": "#d62728", "E": "#1f77b4", "C": "#dddddd", "NA": "#ffffff"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _stage_marks(ax, time_ps: np.ndarray, stage: np.ndarray) -> None:
    """Vertical dashed lines where the stage changes, labelled with the new stage."""
    for i in range(len(stage)):
        if i == 0 or stage[i] != stage[i - 1]:
            ax.axvline(time_ps[i], color="grey", lw=0.6, ls="--")
            ax.text(
                time_ps[i],
                1.0,
                f" {stage[i]}",
                transform=ax.get_xaxis_transform(),
                fontsize=7,
                va="top",
                color="grey",
            )


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)
    return path


def time_series(path: str, time_ps, stage, series: dict, ylabel: str, title: str) -> str:
    """One axis with several named series (name -> array) against time, stages marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for name, values in series.items():
        ax.plot(time_ps, values, marker=".", ms=3, lw=1, label=name)
    _stage_marks(ax, np.asarray(time_ps), np.asarray(stage))
    ax.set(xlabel="time (ps)", ylabel=ylabel, title=title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def rmsf_plot(path: str, residues, values_angstrom, ml_residues=()) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    colors = ["#ff7f0e" if r in set(ml_residues) else "#1f77b4" for r in residues]
    ax.bar(residues, values_angstrom, color=colors)
    ax.set(xlabel="residue", ylabel="C-alpha RMSF (Å)", title="per-residue RMSF (orange: ML region)")
    return _save(fig, path)


def secondary_structure_plot(path: str, time_ps, codes: np.ndarray, residues) -> str:
    """DSSP codes as a residue x time image: red helix, blue strand, grey coil."""
    from matplotlib.colors import ListedColormap

    plt = _pyplot()
    order = ["H", "E", "C", "NA"]
    image = np.vectorize(lambda c: order.index(c) if c in order else 3)(codes).T
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    extent = [float(time_ps[0]), float(time_ps[-1]), float(residues[0]) - 0.5, float(residues[-1]) + 0.5]
    ax.imshow(
        image,
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        extent=extent,
        cmap=ListedColormap([SS_COLORS[c] for c in order]),
        vmin=-0.5,
        vmax=3.5,
    )
    ax.set(
        xlabel="time (ps)",
        ylabel="residue",
        title="secondary structure (DSSP: red helix, blue strand, grey coil)",
    )
    return _save(fig, path)


def thermo_plot(path: str, state: dict, stage) -> str:
    """Energies, temperature, volume and density from the state CSV (2 x 2 panels)."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(9.6, 5.6))
    t = state["time_ps"]
    panels = [
        (
            axes[0, 0],
            {"potential": state["potential_kj_mol"], "total": state["total_kj_mol"]},
            "kJ/mol",
            "energy",
        ),
        (axes[0, 1], {"temperature": state["temperature_K"]}, "K", "temperature"),
        (axes[1, 0], {"volume": state["volume_nm3"]}, "nm³", "box volume"),
        (axes[1, 1], {"density": state["density_g_ml"]}, "g/cm³", "density"),
    ]
    for ax, series, unit, title in panels:
        for name, values in series.items():
            ax.plot(t, values, marker=".", ms=3, lw=1, label=name)
        _stage_marks(ax, t, np.asarray(stage))
        ax.set(xlabel="time (ps)", ylabel=unit, title=title)
        if len(series) > 1:
            ax.legend(fontsize=8)
    return _save(fig, path)

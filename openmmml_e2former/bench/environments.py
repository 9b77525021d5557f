"""Where the large structures' extra error comes from: per-atom force error against how crowded
each atom's neighbourhood is.

Training members have at most 160 atoms, so no training atom has as many neighbours within ~10 Å
as an atom buried in a 1,000-atom protein piece or in bulk water. If the large structures' atoms
err like the small structures' atoms with as many neighbours, and only the atoms more crowded than
any training atom err more, then the growth of the error with size is a gap in the training data
(larger training structures close it) rather than interactions beyond the model's reach (which the
far-field bound of :mod:`.far_field` measures). ``docs/accuracy.md`` reads the results.
"""

from __future__ import annotations

import numpy as np

#: neighbourhood radius (Å): two local cutoffs; an atom's count within it grows from the surface
#: of a small piece to the inside of a large one
RADIUS = 10.0
#: neighbour-count bin edges within :data:`RADIUS`
EDGES = (0, 50, 100, 150, 200, 250, 300, 350, 400, 500, 100_000)
#: structures with at most this many atoms are "small" (the training members' limit), more than
#: ``LARGE`` "large" -- unless the largest evaluated structure has at most ``2 * LARGE`` atoms:
#: then "large" is more than half of it (the GFN2-xTB labels stop at 650 atoms)
SMALL, LARGE = 160, 640
#: a bin is reported when it holds at least this many atoms
MIN_ATOMS = 20


def neighbour_counts(positions: np.ndarray, radius: float = RADIUS) -> np.ndarray:
    """Per atom: the number of other atoms within ``radius`` (same units as ``positions``)."""
    positions = np.asarray(positions, dtype=float)
    counts = np.empty(len(positions), dtype=int)
    for start in range(0, len(positions), 512):
        block = positions[start : start + 512]
        d2 = ((block[:, None, :] - positions[None, :, :]) ** 2).sum(-1)
        counts[start : start + 512] = (d2 <= radius * radius).sum(1) - 1
    return counts


def atom_force_errors(reference: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per atom: the mean absolute force-component error (its mean over atoms is the force MAE)."""
    return np.abs(np.asarray(predicted) - np.asarray(reference)).mean(axis=1)


def _binned(counts: np.ndarray, errors: np.ndarray) -> list[dict]:
    out = []
    for lo, hi in zip(EDGES, EDGES[1:], strict=False):
        inside = (counts >= lo) & (counts < hi)
        if inside.sum() >= MIN_ATOMS:
            out.append(
                {
                    "neighbours": [lo, hi],
                    "mean_neighbours": float(counts[inside].mean()),
                    "atoms": int(inside.sum()),
                    "force_mae": float(errors[inside].mean()),
                }
            )
    return out


def training_neighbours(training) -> dict | None:
    """Median, 99th percentile and maximum neighbour count of the training structures' atoms
    (None without training structures)."""
    if not training:
        return None
    counts = np.concatenate([neighbour_counts(s.positions) for s in training])
    return {
        "p50": float(np.percentile(counts, 50)),
        "p99": float(np.percentile(counts, 99)),
        "max": int(counts.max()),
    }


def environment_table(evaluated, predicted: dict, families: dict, training: dict) -> dict:
    """Per family: per-atom force MAE by neighbour count for the small (<= :data:`SMALL` atoms)
    and large (> :data:`LARGE`, see there) evaluated structures, and the large ones' error split at the
    training atoms' 99th-percentile neighbour count. ``predicted``: {id: (energy, forces)};
    ``families``: {id: family}; ``training``: :func:`training_neighbours` of the model's own
    training structures, or None when they are not known (then there is no split)."""
    limit = training["p99"] if training else None
    largest = max((s.num_atoms for s in evaluated), default=0)
    large = LARGE if largest > 2 * LARGE else max(SMALL, largest // 2)
    out = {"radius": RADIUS, "small_atoms": SMALL, "large_above": large, "training_neighbours": training}
    out["families"] = {}
    for family in sorted(set(families.values())):
        groups = {}
        for name, test in (("small", lambda n: n <= SMALL), ("large", lambda n: n > large)):
            members = [s for s in evaluated if families[s.id] == family and test(s.num_atoms)]
            if not members:
                continue
            counts = np.concatenate([neighbour_counts(s.positions) for s in members])
            errors = np.concatenate([atom_force_errors(s.forces, predicted[s.id][1]) for s in members])
            entry = {
                "structures": len(members),
                "atoms": int(len(counts)),
                "force_mae": float(errors.mean()),
                "bins": _binned(counts, errors),
            }
            entry.update(fraction_beyond_training=None, force_mae_within_training=None)
            entry["force_mae_beyond_training"] = None
            if limit is not None:
                within = counts <= limit
                entry["fraction_beyond_training"] = float(1.0 - within.mean())
                for key, mask in (("within", within), ("beyond", ~within)):
                    entry[f"force_mae_{key}_training"] = float(errors[mask].mean()) if mask.any() else None
            groups[name] = entry
        if groups:
            out["families"][family] = groups
    return out


def plot_environments(result: dict, path: str) -> str | None:
    """One panel per family: per-atom force MAE vs neighbours within :data:`RADIUS`, small
    structures solid, large ones dashed, one colour per model; grey: the training atoms' 99th
    percentile."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    tables = {n: e["environments"] for n, e in result["models"].items() if e.get("environments")}
    if not tables:
        return None
    families = sorted({f for t in tables.values() for f in t["families"]})
    if not families:
        return None
    fig, axes = plt.subplots(1, len(families), figsize=(4.4 * len(families) + 2.6, 4.0), squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {name: cycle[k % len(cycle)] for k, name in enumerate(result["models"])}
    limits = {t["training_neighbours"]["p99"] for t in tables.values() if t["training_neighbours"]}
    for ax, family in zip(axes[0], families, strict=True):
        for name, table in tables.items():
            groups = table["families"].get(family, {})
            for group, style in (("small", "-o"), ("large", "--s")):
                bins = groups.get(group, {}).get("bins") or []
                x = [b["mean_neighbours"] for b in bins]
                ax.plot(x, [b["force_mae"] for b in bins], style, color=colours[name], ms=3, lw=1.2)
        for limit in limits:
            ax.axvline(limit, color="grey", lw=1)
        ax.set(xlabel=f"neighbours within {RADIUS:g} Å", ylabel="per-atom force MAE (eV/Å)", title=family)
    handles = [plt.Line2D([], [], color=colours[n], lw=2, label=n) for n in tables]
    large = next(iter(tables.values())).get("large_above", LARGE)
    handles += [
        plt.Line2D([], [], color="k", ls="-", marker="o", ms=3, label=f"structures <= {SMALL} atoms"),
        plt.Line2D([], [], color="k", ls="--", marker="s", ms=3, label=f"structures > {large} atoms"),
        plt.Line2D([], [], color="grey", lw=1, label="training atoms, 99th percentile"),
    ]
    fig.legend(handles=handles, loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / (4.4 * len(families) + 2.6), 0.93))
    fig.suptitle(f"force error by how crowded an atom's neighbourhood is ({result['labels']} labels)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

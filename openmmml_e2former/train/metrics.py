"""Energy/force errors: MAE and RMSE of energy per atom (eV/atom) and force components (eV/Å)."""

from __future__ import annotations

import numpy as np


class ErrorAccumulator:
    """Accumulates per-structure energy errors and per-component force errors."""

    def __init__(self):
        self.energy_per_atom: list[float] = []
        self.force: list[np.ndarray] = []
        self.sizes: list[int] = []
        self.groups: list[str] = []

    def add(self, energy_error: float, num_atoms: int, force_error: np.ndarray, group: str = "") -> None:
        self.energy_per_atom.append(float(energy_error) / num_atoms)
        self.force.append(np.asarray(force_error, dtype=np.float64).ravel())
        self.sizes.append(int(num_atoms))
        self.groups.append(group)

    def summary(self, mask=None) -> dict:
        e = np.array(self.energy_per_atom)
        idx = np.arange(len(e)) if mask is None else np.nonzero(mask)[0]
        if len(idx) == 0:
            return {"count": 0}
        f = np.concatenate([self.force[i] for i in idx])
        return {
            "count": int(len(idx)),
            "energy_mae": float(np.abs(e[idx]).mean()),
            "energy_rmse": float(np.sqrt((e[idx] ** 2).mean())),
            "force_mae": float(np.abs(f).mean()),
            "force_rmse": float(np.sqrt((f**2).mean())),
        }

    def by_size(self, edges=(0, 30, 45, 60, 10**9)) -> list[dict]:
        """Rows of :meth:`summary` for structures with ``lo <= atoms < hi``."""
        sizes = np.array(self.sizes)
        rows = []
        for lo, hi in zip(edges[:-1], edges[1:], strict=False):
            row = self.summary((sizes >= lo) & (sizes < hi))
            if row["count"]:
                rows.append({"atoms": f"{lo}-{hi - 1}" if hi < 10**9 else f">={lo}", **row})
        return rows

    def by_group(self) -> list[dict]:
        """Rows of :meth:`summary` for each group (molecule) given to :meth:`add`, in name order."""
        groups = np.array(self.groups)
        return [{"molecule": g, **self.summary(groups == g)} for g in sorted(set(self.groups))]


def format_table(rows: list[dict], key: str = "atoms") -> str:
    """A Markdown table of :meth:`ErrorAccumulator.by_size` (or, with ``key="molecule"``,
    :meth:`ErrorAccumulator.by_group`) rows (energies meV/atom, forces eV/Å)."""
    lines = [
        f"| {key} | structures | E MAE (meV/atom) | E RMSE (meV/atom) | F MAE (eV/Å) | F RMSE (eV/Å) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r[key]} | {r['count']} | {1000 * r['energy_mae']:.2f} | {1000 * r['energy_rmse']:.2f} "
            f"| {r['force_mae']:.4f} | {r['force_rmse']:.4f} |"
        )
    return "\n".join(lines)

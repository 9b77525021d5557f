"""An ASE calculator for E2Former models: the same network and code path as
``MLPotential('e2former-lsr')`` in OpenMM, for geometry optimisation, ASE MD and tools that
speak ASE.

>>> from ase.io import read
>>> from openmmml_e2former.ase import E2FormerCalculator
>>> atoms = read("peptide.pdb")
>>> atoms.calc = E2FormerCalculator()            # the shipped e2former-lsr weights
>>> atoms.get_potential_energy(), atoms.get_forces()   # eV, eV/Å

Units are ASE's (eV, Å, eV/Å³). Fragments (the long-range blocks attend to fragment
centroids), in this order: ``fragments=`` given; the ``fragment_id`` array of the project's
datasets; one fragment per residue when the atoms carry residue numbers (a PDB file; ACE/NME
caps join the residue they cap, as in OpenMM); otherwise the molecule-graph rule
(``molecule_fragments.brics_fragment_ids_from_coordinates``). Periodic cells give stress too.
"""

from __future__ import annotations

import numpy as np

from .optional import require
from .units import ANGSTROM_PER_NM, KJ_PER_MOL_TO_EV

# this module is the ASE calculator: importing it needs ASE (`import openmmml_e2former` does not)
_calculator = require("ase.calculators.calculator", "ase", "the ASE calculator (openmmml_e2former.ase)")
Calculator, all_changes = _calculator.Calculator, _calculator.all_changes

#: residue names of terminal caps: N-terminal caps join the next residue, C-terminal the previous
N_CAPS = {"ACE", "FOR"}
C_CAPS = {"NME", "NHE", "NH2"}


def residue_fragment_ids(residue_numbers, residue_names, chains=None) -> np.ndarray:
    """One fragment per residue (consecutive atoms with the same residue number and chain),
    caps merged into the residue they cap; ids ``0 .. F-1`` in order of appearance."""
    n = len(residue_numbers)
    chains = [""] * n if chains is None else list(chains)
    keys, names = [], []
    for k in range(n):
        key = (chains[k], int(residue_numbers[k]))
        if not keys or keys[-1] != key:
            keys.append(key)
            names.append(str(residue_names[k]).strip().upper())
    owner = list(range(len(keys)))
    for r, name in enumerate(names):
        same_chain = lambda a, b: keys[a][0] == keys[b][0]  # noqa: E731
        if name in N_CAPS and r + 1 < len(keys) and same_chain(r, r + 1):
            owner[r] = r + 1
        elif name in C_CAPS and r > 0 and same_chain(r, r - 1):
            owner[r] = owner[r - 1]
    residue_of_atom, r = [], -1
    last = None
    for k in range(n):
        key = (chains[k], int(residue_numbers[k]))
        if key != last:
            r += 1
            last = key
        residue_of_atom.append(owner[r])
    _, ids = np.unique(np.array(residue_of_atom), return_inverse=True)
    order = {}
    return np.array([order.setdefault(i, len(order)) for i in ids], dtype=np.int64)


def residue_groups(atoms) -> list[list[int]] | None:
    """Atom indices of each residue (consecutive atoms with one residue number), or None when
    the atoms carry no residue information (``ase.io.read`` of a PDB file gives it)."""
    if "residuenumbers" not in atoms.arrays or "residuenames" not in atoms.arrays:
        return None
    groups: list[list[int]] = []
    numbers = atoms.arrays["residuenumbers"]
    for k in range(len(atoms)):
        if k == 0 or numbers[k] != numbers[k - 1]:
            groups.append([])
        groups[-1].append(k)
    return groups


def residue_charge(atoms) -> int | None:
    """Sum of the residues' formal charges by the plug-in's rule (names of the protons present,
    termini, monatomic ions), or None without residue information."""
    from .chemistry import residue_formal_charge

    groups = residue_groups(atoms)
    if groups is None or "atomtypes" not in atoms.arrays:
        return None
    names, types = atoms.arrays["residuenames"], atoms.arrays["atomtypes"]
    total = 0
    for group in groups:
        single = atoms[group[0]].symbol if len(group) == 1 else None
        total += residue_formal_charge(
            str(names[group[0]]).strip(), {str(types[k]).strip() for k in group}, single
        )
    return total


def fragments_for(atoms, charge: int = 0) -> np.ndarray:
    """Fragment ids of ``atoms`` by the rule in this module's docstring (without ``fragments=``)."""
    if "fragment_id" in atoms.arrays:
        from .fragments import normalize_fragment_ids

        return normalize_fragment_ids(atoms.arrays["fragment_id"], len(atoms))
    if "residuenumbers" in atoms.arrays and "residuenames" in atoms.arrays:
        return residue_fragment_ids(atoms.arrays["residuenumbers"], atoms.arrays["residuenames"])
    from .molecule_fragments import brics_fragment_ids_from_coordinates

    return brics_fragment_ids_from_coordinates(atoms.numbers, atoms.positions, charge)


def reduced_frame(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(R, box)``: a rotation ``R`` (row vectors: ``x' = x @ R``) taking the cell to OpenMM's
    reduced form (a along x, b in the xy plane, positive diagonal) and the reduced box rows."""
    q, r = np.linalg.qr(np.asarray(cell, dtype=float).T)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    q, r = q * signs, (r.T * signs).T  # positive diagonal
    if np.linalg.det(q) < 0:
        raise ValueError("the cell is left-handed: reorder its vectors (ASE: atoms.cell)")
    box = r.T.copy()  # rows: lattice vectors in the rotated frame, lower-triangular
    box[2] -= box[1] * np.round(box[2, 1] / box[1, 1])
    box[2] -= box[0] * np.round(box[2, 0] / box[0, 0])
    box[1] -= box[0] * np.round(box[1, 0] / box[0, 0])
    return q, box


class E2FormerCalculator(Calculator):
    """ASE calculator for an E2Former checkpoint.

    Args:
        model: a potential name (``'e2former-lsr'``, ``'e2former'``: their default weights, as
            ``MLPotential`` finds them) or a checkpoint path (ours or the authors').
        charge: total charge (e); default ``atoms.info['charge']``, else the sum of the initial
            charges, else the residues' formal charges (PDB input; the plug-in's rule), else 0.
        fragments: fragment id per atom, or ``None`` for the rule in the module docstring.
        dtype: ``'float64'`` (default) or ``'float32'``.
        head: energy head of an authors' checkpoint with several.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model: str = "e2former-lsr",
        charge: float | None = None,
        fragments=None,
        dtype: str = "float64",
        head: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        import torch

        from .checkpoints import load_checkpoint
        from .potential import default_weights

        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
        path = model if model.endswith(".pt") or "/" in model else default_weights(model)
        self.network, self.metadata = load_checkpoint(path, head)
        self.metadata["path"] = path
        self.dtype = getattr(torch, dtype)
        self.charge = charge
        self.fragments = fragments
        self._module = None
        self._key = None

    def _total_charge(self, atoms) -> float:
        if self.charge is not None:
            return float(self.charge)
        if "charge" in atoms.info:
            return float(atoms.info["charge"])
        if atoms.has("initial_charges") and atoms.get_initial_charges().any():
            return float(round(atoms.get_initial_charges().sum()))
        from_residues = residue_charge(atoms)
        return float(from_residues) if from_residues is not None else 0.0

    def _module_for(self, atoms, charge: float):
        from .export import OpenMMModule

        periodic = bool(atoms.pbc.any())
        if periodic and not atoms.pbc.all():
            raise ValueError("E2Former needs periodicity in all three directions or none (atoms.pbc)")
        if self.fragments is not None:
            from .fragments import normalize_fragment_ids

            fragments = normalize_fragment_ids(self.fragments, len(atoms))
        else:
            fragments = fragments_for(atoms, int(round(charge)))
        key = (tuple(atoms.numbers), tuple(int(f) for f in fragments), charge, periodic)
        if key != self._key:
            self._module = OpenMMModule(
                self.network,
                list(atoms.numbers),
                list(fragments),
                charge,
                periodic=periodic,
                dtype=self.dtype,
            ).eval()
            self._key = key
        return self._module

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        import torch

        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        charge = self._total_charge(atoms)
        module = self._module_for(atoms, charge)
        periodic = module.periodic
        rotation, box = (np.eye(3), None)
        if periodic:
            rotation, box = reduced_frame(atoms.cell.array)
        positions = torch.tensor(atoms.positions @ rotation, dtype=self.dtype, requires_grad=True)
        strain = torch.zeros((3, 3), dtype=self.dtype, requires_grad=periodic)
        deform = torch.eye(3, dtype=self.dtype) + 0.5 * (strain + strain.T)
        boxvectors = None
        if periodic:
            boxvectors = (torch.tensor(box, dtype=self.dtype) @ deform) / ANGSTROM_PER_NM
        energy_kj = module((positions @ deform) / ANGSTROM_PER_NM, boxvectors)
        inputs = [positions, strain] if periodic else [positions]
        grads = torch.autograd.grad(energy_kj, inputs)
        energy = float(energy_kj) * KJ_PER_MOL_TO_EV
        forces = -grads[0].detach().numpy().astype(float) * KJ_PER_MOL_TO_EV @ rotation.T
        self.results["energy"] = self.results["free_energy"] = energy
        self.results["forces"] = forces
        if periodic:
            full_3x3_to_voigt_6_stress = require("ase.stress", "ase").full_3x3_to_voigt_6_stress

            sigma = grads[1].detach().numpy().astype(float) * KJ_PER_MOL_TO_EV / atoms.get_volume()
            self.results["stress"] = full_3x3_to_voigt_6_stress(rotation @ sigma @ rotation.T)

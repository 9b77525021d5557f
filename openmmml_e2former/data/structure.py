"""One structure of a dataset: atoms, fragments, charge, and (once labelled) energy and forces."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Structure:
    """A structure with its fragment ids and total charge.

    ``positions`` ``[N, 3]`` Å; ``numbers`` ``[N]`` atomic numbers; ``fragment_ids`` ``[N]`` in 0..F-1;
    ``charge`` total charge (e); ``multiplicity`` 2S+1. ``molecule`` names the chemical entity
    (conformers of one molecule share it; splits never separate them). ``energy`` (eV) and
    ``forces`` ``[N, 3]`` (eV/Å) are None until labelled; ``labels`` holds the labeller's metadata.
    """

    id: str
    molecule: str
    numbers: np.ndarray
    positions: np.ndarray
    fragment_ids: np.ndarray
    charge: int = 0
    multiplicity: int = 1
    source: str = ""
    energy: float | None = None
    forces: np.ndarray | None = None
    labels: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.numbers = np.asarray(self.numbers, dtype=np.int64)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.fragment_ids = np.asarray(self.fragment_ids, dtype=np.int64)
        n = len(self.numbers)
        if self.positions.shape[0] != n or self.fragment_ids.shape[0] != n:
            raise ValueError(
                f"structure {self.id}: numbers ({n}), positions ({self.positions.shape[0]}) and "
                f"fragment_ids ({self.fragment_ids.shape[0]}) differ in length"
            )
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64).reshape(n, 3)

    @property
    def num_atoms(self) -> int:
        return int(len(self.numbers))

    @property
    def labelled(self) -> bool:
        return self.energy is not None and self.forces is not None

    def num_electrons(self) -> int:
        return int(self.numbers.sum()) - int(self.charge)


def openmm_topology(structures: list[Structure]):
    """An OpenMM ``Topology`` of ``structures`` in order: one chain, one residue per fragment of each
    structure (so residue-based fragments reproduce the structure's fragment ids), elements only and
    no bonds, which is what ``MLPotential('e2former-lsr').createSystem`` needs to evaluate dataset
    structures (pass ``charge=`` for their total charge)."""
    import openmm.app as app

    topology = app.Topology()
    chain = topology.addChain()
    for structure in structures:
        residues = {}
        for z, f in zip(structure.numbers, structure.fragment_ids, strict=True):
            if int(f) not in residues:
                residues[int(f)] = topology.addResidue(f"F{int(f)}", chain)
            element = app.Element.getByAtomicNumber(int(z))
            topology.addAtom(element.symbol, element, residues[int(f)])
    return topology

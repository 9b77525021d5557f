"""One object that names every hyperparameter of the E2Former-LSR network.

Units: every length is in Angstrom; energies are in ``E2FormerConfig.energy_unit`` (eV for
our own models, kcal/mol for the authors' released checkpoints). ``export.py`` converts that
unit to kJ/mol, once, at the OpenMM boundary.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

# Elements of the shipped protein potentials: H, C, N, O, S plus Na and Cl.
PROTEIN_ELEMENTS = [1, 6, 7, 8, 11, 16, 17]

AVG_DEGREE = 23.395238876342773  # the authors' constant divisor of the edge-degree sum

#: Energy units a network may predict in (``E2FormerConfig.energy_unit``).
ENERGY_UNITS = ("eV", "kcal/mol", "kJ/mol")


@dataclass
class E2FormerConfig:
    """Hyperparameters of :class:`~openmmml_e2former.model.E2FormerLSR`.

    ``local_mode`` and ``fragment_selection`` switch between the authors' exact
    function ("reference" / "topk") and the smooth variant used for MD ("smooth" / "all");
    see ``docs/smoothness.md``.
    """

    channels: int = 32  # C: multiplicity of every degree l = 0..lmax
    lmax: int = 2
    embed_dim: int = 48  # width of the atomic-number token embedding
    num_local_layers: int = 4
    num_long_layers: int = 2  # 0 gives the local-only E2Former
    num_heads: int = 4
    head_dim: int = 8  # scalar width per head in the query/key dot product
    num_basis: int = 32  # Gaussian radial basis functions
    edge_embed_dim: int = 128  # element embeddings inside attention edges
    local_cutoff: float = 5.0  # Angstrom
    long_cutoff: float = 18.0  # Angstrom
    max_fragments: int = 64  # K of the top-K fragment cut ("topk" mode)
    max_neighbors: int = 640  # slot cap of the reference local graph
    avg_degree: float = AVG_DEGREE
    softmax_eps: float = 1e-3
    local_mode: str = "smooth"  # "smooth" (MD) or "reference" (authors' exact slots)
    fragment_selection: str = "all"  # "all" fragments within long_cutoff, or "topk"
    elements: list[int] = field(default_factory=lambda: list(PROTEIN_ELEMENTS))
    num_embeddings: int = 256  # size of the atomic-number tables (authors use 256)
    edge_degree_embeddings: int = 300  # size of the edge-degree element tables
    energy_unit: str = "eV"  # unit of the predicted energy (forces: this unit per Angstrom)
    # long-range fragment weights: "softmax" (the authors': normalised over the fragments, an
    # average) or "sigmoid" (each weight in (0, 1) on its own: contributions can add up)
    long_attention: str = "softmax"
    electrostatics: str = "none"  # "none", or "coulomb": learned charges + screened Coulomb
    coulomb_sigma: float = 2.0  # Angstrom: erf(r/sigma)/r screening of the Coulomb kernel
    coulomb_cutoff: float = 0.0  # Angstrom; 0: every pair (non-periodic only)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.channels % self.num_heads:
            raise ValueError(f"channels ({self.channels}) must be divisible by num_heads")
        if self.lmax < 1:
            raise ValueError("lmax must be >= 1 (the message tensor product needs l=1)")
        if self.local_mode not in ("smooth", "reference"):
            raise ValueError(f"local_mode must be 'smooth' or 'reference', not {self.local_mode!r}")
        if self.fragment_selection not in ("all", "topk"):
            raise ValueError(f"fragment_selection must be 'all' or 'topk', not {self.fragment_selection!r}")
        if self.energy_unit not in ENERGY_UNITS:
            raise ValueError(f"energy_unit must be one of {ENERGY_UNITS}, not {self.energy_unit!r}")
        if self.long_attention not in ("softmax", "sigmoid"):
            raise ValueError(f"long_attention must be 'softmax' or 'sigmoid', not {self.long_attention!r}")
        if self.electrostatics not in ("none", "coulomb"):
            raise ValueError(f"electrostatics must be 'none' or 'coulomb', not {self.electrostatics!r}")
        if self.coulomb_sigma <= 0 or self.coulomb_cutoff < 0:
            raise ValueError("coulomb_sigma must be positive and coulomb_cutoff >= 0")
        if self.local_cutoff <= 0 or self.long_cutoff <= 0:
            raise ValueError("cutoffs must be positive")
        if not self.elements:
            raise ValueError("elements must list at least one atomic number")
        if max(self.elements) >= self.num_embeddings or min(self.elements) < 1:
            raise ValueError(f"atomic numbers must be in 1..{self.num_embeddings - 1}")

    @property
    def max_cutoff(self) -> float:
        """Largest interaction radius in Angstrom (sets the minimum periodic box)."""
        cutoff = self.local_cutoff
        if self.num_long_layers > 0:
            cutoff = max(cutoff, self.long_cutoff)
        if self.electrostatics == "coulomb":
            cutoff = max(cutoff, self.coulomb_cutoff)
        return cutoff

    def replace(self, **changes) -> E2FormerConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> E2FormerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown E2FormerConfig keys: {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def small_config(**changes) -> E2FormerConfig:
    """CPU-friendly size (the shipped default): 32 channels, l <= 2, 3 local + 2 long blocks."""
    base = E2FormerConfig(
        channels=32,
        embed_dim=32,
        num_local_layers=3,
        num_long_layers=2,
        num_heads=4,
        head_dim=8,
        num_basis=32,
        edge_embed_dim=32,
    )
    return base.replace(**changes)


def paper_config(**changes) -> E2FormerConfig:
    """The paper's size: 256 channels, l <= 2, 4 local + 2 long-range blocks (18.8 M params)."""
    base = E2FormerConfig(
        channels=256,
        embed_dim=384,
        num_local_layers=4,
        num_long_layers=2,
        num_heads=16,
        head_dim=16,
        num_basis=256,
        edge_embed_dim=128,
    )
    return base.replace(**changes)


def fixture_config(**changes) -> E2FormerConfig:
    """The widths of the authors' reference fixture, with the authors' exact semantics."""
    base = E2FormerConfig(
        channels=32,
        embed_dim=48,
        num_local_layers=4,
        num_long_layers=2,
        num_heads=4,
        head_dim=8,
        num_basis=32,
        edge_embed_dim=128,
        local_mode="reference",
        fragment_selection="topk",
        elements=list(range(1, 119)),
    )
    return base.replace(**changes)


PRESETS = {"small": small_config, "paper": paper_config, "fixture": fixture_config}

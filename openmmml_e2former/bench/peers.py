"""The peers we are compared with, built from their own libraries (random weights).

MACE-OFF23's small and medium architectures are rebuilt with mace-torch from the
hyperparameters the MACE-OFF23 paper reports; timing does not depend on the weights, and a
random model saved with :func:`save_mace_off23` loads in openmm-ml like a trained one
(``MLPotential('mace', modelPath=...)``).
"""

from __future__ import annotations

from ..optional import require

#: MACE-OFF23 hyperparameters (Kovács et al., "MACE-OFF23: Transferable Machine Learning Force
#: Fields for Organic Molecules", arXiv:2312.15211, section "MACE-OFF23 models": three sizes,
#: small = 96 invariant channels (L = 0) with a 4.5 A cutoff, medium = 128 channels with L = 1
#: and large = 192 channels with L = 2 at 5.0 A; all 2 interaction layers, correlation order 3,
#: spherical harmonics up to l = 3, 8 Bessel functions with a p = 5 polynomial envelope, a
#: [64, 64, 64] radial MLP, 16x0e readout MLP, the 10 elements of the SPICE subset used). The
#: small model's 4.5 A cutoff is also what third-party code that loads the released
#: MACE-OFF23_small.model reports (its r_max). Interaction blocks and the other options are
#: mace-torch's defaults (``RealAgnosticResidualInteractionBlock``; ``use_reduced_cg`` as the
#: installed version sets it).
MACE_OFF23 = {
    "small": {"hidden_irreps": "96x0e", "max_L": 0, "num_channels": 96, "r_max": 4.5},
    "medium": {"hidden_irreps": "128x0e + 128x1o", "max_L": 1, "num_channels": 128, "r_max": 5.0},
}
MACE_OFF23_COMMON = {
    "num_interactions": 2,
    "correlation": 3,
    "max_ell": 3,
    "num_bessel": 8,
    "num_polynomial_cutoff": 5,
    "radial_MLP": [64, 64, 64],
    "MLP_irreps": "16x0e",
    "interaction": "RealAgnosticResidualInteractionBlock",
    "gate": "silu",
    "model": "ScaleShiftMACE",
}
MACE_OFF23_ELEMENTS = [1, 6, 7, 8, 9, 15, 16, 17, 35, 53]  # H C N O F P S Cl Br I
MACE_OFF23_SOURCE = "arXiv:2312.15211 (MACE-OFF23), model sizes small/medium; mace-torch defaults otherwise"


def build_mace_off23(preset: str, dtype=None, seed: int = 0):
    """A ``ScaleShiftMACE`` of the MACE-OFF23 ``preset`` size ('small' or 'medium') with random
    weights (``torch.manual_seed(seed)``), zero atomic energies, in ``dtype`` (default: torch's)."""
    import numpy as np
    import torch

    purpose = "the MACE-OFF23 peers of the benchmarks"
    # mace before e3nn: lets e3nn 0.4 load its constants under torch >= 2.6
    modules = require("mace.modules", "bench", purpose)
    o3 = require("e3nn.o3", "bench", purpose)

    if preset not in MACE_OFF23:
        raise ValueError(f"unknown MACE-OFF23 size {preset!r}; use one of {sorted(MACE_OFF23)}")
    hp = {**MACE_OFF23_COMMON, **MACE_OFF23[preset]}
    default = torch.get_default_dtype()
    dtype = dtype or default
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        block = modules.interaction_classes[hp["interaction"]]
        model = modules.ScaleShiftMACE(
            r_max=hp["r_max"],
            num_bessel=hp["num_bessel"],
            num_polynomial_cutoff=hp["num_polynomial_cutoff"],
            max_ell=hp["max_ell"],
            interaction_cls=block,
            interaction_cls_first=block,
            num_interactions=hp["num_interactions"],
            num_elements=len(MACE_OFF23_ELEMENTS),
            hidden_irreps=o3.Irreps(hp["hidden_irreps"]),
            MLP_irreps=o3.Irreps(hp["MLP_irreps"]),
            atomic_energies=np.zeros(len(MACE_OFF23_ELEMENTS)),
            avg_num_neighbors=20.0,
            atomic_numbers=MACE_OFF23_ELEMENTS,
            correlation=hp["correlation"],
            gate=torch.nn.functional.silu,
            radial_MLP=hp["radial_MLP"],
            radial_type="bessel",
            atomic_inter_scale=1.0,
            atomic_inter_shift=0.0,
        )
    finally:
        torch.set_default_dtype(default)
    return model.to(dtype).eval(), hp


def save_mace_off23(path: str, preset: str = "small", seed: int = 0) -> str:
    """Write a random MACE-OFF23-sized model (float64) where openmm-ml's ``'mace'`` potential
    reads one (``MLPotential('mace', modelPath=path)``); returns ``path``."""
    import torch

    model, _ = build_mace_off23(preset, torch.float64, seed)
    torch.save(model, path)
    return path

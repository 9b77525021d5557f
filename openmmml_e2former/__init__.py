"""openmmml-e2former: the E2Former-LSR machine-learning force field inside OpenMM via openmm-ml."""

__version__ = "0.1.0"

# Saved TorchScript models call vesin-torch's neighbour list: register its operators.
import vesin_torch  # noqa: E402,F401


def _repair_openmm_torch_plugins() -> None:
    from .potential import ensure_torch_plugins

    ensure_torch_plugins()


_repair_openmm_torch_plugins()

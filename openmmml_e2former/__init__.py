"""openmmml-e2former: the E2Former-LSR machine-learning force field inside OpenMM via openmm-ml."""

__version__ = "0.1.0"

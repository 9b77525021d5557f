"""Pure PyTorch E2Former-LSR network (no OpenMM import)."""

from .config import PRESETS, E2FormerConfig, fixture_config, paper_config, small_config
from .network import E2FormerLSR

__all__ = ["E2FormerConfig", "E2FormerLSR", "PRESETS", "fixture_config", "paper_config", "small_config"]

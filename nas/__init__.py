"""HOW to build, count, search and export hybrid backbones."""
from .count import ModelCount, count
from .model import HybridNet, build_model

__all__ = ["build_model", "count", "HybridNet", "ModelCount"]

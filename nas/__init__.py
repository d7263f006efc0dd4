"""HOW to build, count, search and export hybrid backbones.

Importing the package registers the timm models (`hybridnas`, `hybridnas_<seed>`).
"""
from . import timm_models
from .count import ModelCount, count
from .model import HybridNet, build_model

__all__ = ["build_model", "count", "HybridNet", "ModelCount", "timm_models"]

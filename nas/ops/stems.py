"""Stems (image to first feature map) and between-stage downsampling layers."""
from __future__ import annotations

import torch.nn as nn

from ..counting import count_downsample, count_stem
from .base import make_norm2d

__all__ = ["build_stem", "count_stem", "build_downsample", "count_downsample"]


class Stem(nn.Sequential):
    """A sequence of layers with a known total stride, for `feature_info`."""

    def __init__(self, *layers: nn.Module, stride: int) -> None:
        super().__init__(*layers)
        self.stride = stride


def build_stem(kind: str, in_chans: int, width: int, kernel: int, norm: str) -> Stem:
    if kind == "overlap":  # VAN: one overlapping strided conv
        return Stem(nn.Conv2d(in_chans, width, kernel, 4, padding=kernel // 2), make_norm2d(norm, width), stride=4)
    if kind == "patch":  # ConvNeXt / PeLK: non-overlapping 4x4 patches
        return Stem(nn.Conv2d(in_chans, width, 4, 4), make_norm2d(norm, width), stride=4)
    if kind == "conv2":  # SMT: conv-BN-ReLU at stride 2, then a 2x2 stride-2 conv
        return Stem(nn.Conv2d(in_chans, width, kernel, 2, padding=kernel // 2, bias=False), nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True), nn.Conv2d(width, width, 2, 2), make_norm2d(norm, width), stride=4)
    if kind == "deep":  # CoAtNet: conv-BN-GELU at stride 2, then a 3x3 conv
        return Stem(nn.Conv2d(in_chans, width, kernel, 2, padding=kernel // 2, bias=False), nn.BatchNorm2d(width),
                    nn.GELU(), nn.Conv2d(width, width, kernel, 1, padding=kernel // 2, bias=False), stride=2)
    raise ValueError(f"unknown stem {kind!r}")


def build_downsample(kind: str, dim_in: int, dim: int, norm: str) -> nn.Module:
    """The layer in front of a stage's blocks ('block' and 'none' leave it to the blocks)."""
    if kind == "overlap":  # VAN / SMT: 3x3 stride-2 conv, then norm
        return nn.Sequential(nn.Conv2d(dim_in, dim, 3, 2, padding=1), make_norm2d(norm, dim))
    if kind == "patch":  # ConvNeXt / PeLK: norm, then 2x2 stride-2 conv
        return nn.Sequential(make_norm2d(norm, dim_in), nn.Conv2d(dim_in, dim, 2, 2))
    if kind in ("none", "block"):
        return nn.Identity()
    raise ValueError(f"unknown downsample {kind!r}")

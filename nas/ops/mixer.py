"""The residual block the conv-variant operators (issue 5) sit in, ConvNeXt style.

``x + drop_path(layer_scale(pw2(GELU(pw1(BN(mixer(x)))))))``: the variant operator is the spatial
mixer (width and resolution kept), followed by a BatchNorm and a 1x1-conv MLP of ``mlp_ratio * dim``
hidden channels. The MLP convs are ordinary ``nn.Conv2d`` (sparsity masks apply to them).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..counting import count_mixer_block, dense_count, largest_divisor
from .conv import layer_scale
from .init import init_module
from .layers import DropPath

__all__ = ["MixerBlock", "count_mixer_block", "largest_divisor", "dense_count"]


class MixerBlock(nn.Module):
    """A spatial mixer, BN, 1x1-conv MLP, layer scale, residual."""

    def __init__(self, mixer: nn.Module, dim: int, params: dict[str, Any], drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = int(params["mlp_ratio"] * dim)
        self.mixer = mixer
        self.norm = nn.BatchNorm2d(dim)
        self.pw1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.pw2 = nn.Conv2d(hidden, dim, 1)
        self.ls = layer_scale(dim, params["layer_scale"])
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """TF-EfficientNet's init (fan-out normal convs), as timm applies to CondConv / MobileNet-family
        operators and the ResNet-family ones (ResNeSt, SCNet, RedNet) apply fan-out He-normal; kernel banks
        and DO-Conv's W and D keep their own modules' init."""
        init_module(self, "efficientnet")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw2(self.act(self.pw1(self.norm(self.mixer(x)))))
        return x + self.drop_path(self.ls(y))

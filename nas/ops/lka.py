"""Large Kernel Attention and the VAN block (Guo et al., Visual Attention Network, 2022).

A K x K depthwise kernel is decomposed into a (2d-1) x (2d-1) depthwise conv, a ceil(K/d) x ceil(K/d)
depthwise conv with dilation d and a 1x1 conv; their output gates the input element-wise.
K=21, d=3 is VAN's 5x5 followed by 7x7 with dilation 3.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..counting import count_lka, lka_kernels
from .base import DepthwiseConv2d
from .conv import layer_scale
from .init import init_module
from .layers import DropPath

__all__ = ["LargeKernelAttention", "VanBlock", "count_lka", "lka_kernels"]


class LargeKernelAttention(nn.Module):
    """LKA: depthwise local conv, depthwise dilated conv, 1x1 conv; the result multiplies the input."""

    def __init__(self, dim: int, kernel: int = 21, dilation: int = 3) -> None:
        super().__init__()
        local, spatial = lka_kernels(kernel, dilation)
        self.conv_local = DepthwiseConv2d(dim, local)
        self.conv_dilated = DepthwiseConv2d(dim, spatial, dilation)
        self.conv_channel = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_channel(self.conv_dilated(self.conv_local(x)))


class VanAttention(nn.Module):
    """VAN's spatial attention unit: 1x1, GELU, LKA, 1x1, with its own shortcut."""

    def __init__(self, dim: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()
        self.lka = LargeKernelAttention(dim, kernel, dilation)
        self.proj_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj_out(self.lka(self.act(self.proj_in(x))))


class ConvFfn(nn.Module):
    """VAN's FFN: 1x1 expand, 3x3 depthwise conv, GELU, 1x1 project."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.conv_dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.conv_dw(self.fc1(x))))


class VanBlock(nn.Module):
    """BN, VAN attention, layer scale, residual; BN, conv-FFN, layer scale, residual."""

    def __init__(self, dim_in: int, dim: int, params: dict[str, Any], stride: int = 1,
                 drop_path: float = 0.0, feat_size: tuple[int, int] = (7, 7)) -> None:
        super().__init__()
        assert dim_in == dim and stride == 1, "VAN blocks keep width and resolution"
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = VanAttention(dim, params["kernel"], params["dilation"])
        self.ls1 = layer_scale(dim, params["layer_scale"])
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvFfn(dim, int(dim * params["mlp_ratio"]))
        self.ls2 = layer_scale(dim, params["layer_scale"])
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """VAN's official init: fan-out normal convs (groups counted)."""
        init_module(self, "van")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))

"""Plain convolution blocks: ConvNeXt's block and CoAtNet's MBConv."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..counting import count_convnext, count_mbconv, count_pool_shortcut, se_channels
from .base import DepthwiseConv2d
from .init import init_module
from .layers import DropPath, Mlp

__all__ = ["ConvNeXtBlock", "MbConvBlock", "count_convnext", "count_mbconv"]


class LayerScale2d(nn.Module):
    """Per-channel scaling of a residual branch (CaiT / ConvNeXt), on NCHW maps."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


def layer_scale(dim: int, init_value: float) -> nn.Module:
    return LayerScale2d(dim, init_value) if init_value > 0 else nn.Identity()


class ConvNeXtBlock(nn.Module):
    """Depthwise k x k conv, LayerNorm, MLP, layer scale, residual (ConvNeXt, ICLR 2022 style)."""

    def __init__(self, dim_in: int, dim: int, params: dict[str, Any], stride: int = 1,
                 drop_path: float = 0.0, feat_size: tuple[int, int] = (7, 7)) -> None:
        super().__init__()
        assert dim_in == dim and stride == 1, "ConvNeXt blocks keep width and resolution"
        k = params["kernel"]
        self.conv_dw = DepthwiseConv2d(dim, k)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(params["mlp_ratio"] * dim), act_layer=nn.GELU)
        self.ls = layer_scale(dim, params["layer_scale"])
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """ConvNeXt's init: trunc-normal .02 for the conv and the MLP."""
        init_module(self, "convnext")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_dw(x).permute(0, 2, 3, 1)
        y = self.mlp(self.norm(y)).permute(0, 3, 1, 2)
        return x + self.drop_path(self.ls(y))


class SqueezeExcite(nn.Module):
    """SE gate as in EfficientNet / CoAtNet: pool, 1x1 reduce, SiLU, 1x1 expand, sigmoid."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.SiLU(inplace=True)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * s.sigmoid()


def pool_shortcut(dim_in: int, dim: int, stride: int) -> nn.Module:
    """Identity, or 2x2 average pool and/or 1x1 projection when the block changes shape (CoAtNet)."""
    layers: list[nn.Module] = []
    if stride == 2:
        layers.append(nn.AvgPool2d(2, 2))
    if dim_in != dim:
        layers.append(nn.Conv2d(dim_in, dim, 1))
    return nn.Sequential(*layers) if layers else nn.Identity()


class MbConvBlock(nn.Module):
    """CoAtNet's MBConv: pre-norm BN, 1x1 expand (strided when downsampling), depthwise k x k, SE,
    1x1 project; the shortcut pools and projects when the shape changes (the paper's 1x1 stride mode).
    """

    def __init__(self, dim_in: int, dim: int, params: dict[str, Any], stride: int = 1,
                 drop_path: float = 0.0, feat_size: tuple[int, int] = (7, 7)) -> None:
        super().__init__()
        mid = int(dim * params["expand_ratio"])
        k = params["kernel"]
        self.shortcut = pool_shortcut(dim_in, dim, stride)
        self.pre_norm = nn.BatchNorm2d(dim_in)
        self.conv1 = nn.Conv2d(dim_in, mid, 1, stride=stride, bias=False)
        self.norm1 = nn.BatchNorm2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, k, padding=k // 2, groups=mid, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.act = nn.GELU()
        se = se_channels(dim, params)
        self.se = SqueezeExcite(mid, se) if se else nn.Identity()
        self.conv2 = nn.Conv2d(mid, dim, 1)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """CoAtNet's MBConv as timm's maxxvit initialises it: TF-EfficientNet fan-out normal convs."""
        init_module(self, "efficientnet")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.act(self.norm1(self.conv1(self.pre_norm(x))))
        x = self.se(self.act(self.norm2(self.conv_dw(x))))
        return shortcut + self.drop_path(self.conv2(x))


__all__ += ["LayerScale2d", "layer_scale", "SqueezeExcite", "pool_shortcut", "count_pool_shortcut"]

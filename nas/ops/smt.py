"""SMT's scale-aware modulation (Lin et al., Scale-Aware Modulation Meet Transformer, ICCV 2023).

SAM splits the channels into heads, convolves head i depthwise with kernel 3+2i (multi-head mixed
convolution), regroups one channel of every head together and mixes them with a grouped 1x1 conv
then a 1x1 conv (scale-aware aggregation); the result modulates a linear projection of the input.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..counting import count_conv_mlp, count_sam
from .base import DepthwiseConv2d
from .conv import layer_scale
from .init import init_module
from .layers import DropPath

__all__ = ["ScaleAwareModulation", "ConvMlp", "SamBlock", "count_sam", "count_conv_mlp"]


class ConvMlp(nn.Module):
    """SMT's MLP on NHWC tokens: fc1, GELU(x + depthwise 3x3(x)), fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.conv_dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        x = self.act(x + self.conv_dw(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        return self.fc2(x)


class ScaleAwareModulation(nn.Module):
    """SAM on NHWC tokens: mixed-kernel multi-head depthwise convs, scale-aware aggregation, modulation."""

    def __init__(self, dim: int, heads: int = 4, expand_ratio: int = 2, qkv_bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        head_dim = dim // heads
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.s = nn.Linear(dim, dim, bias=qkv_bias)
        self.convs = nn.ModuleList(
            DepthwiseConv2d(head_dim, 3 + 2 * i) for i in range(heads))
        # groups of `heads` channels, one from each head, mixed by a grouped 1x1 conv
        self.aggregate = nn.Conv2d(dim, dim * expand_ratio, 1, groups=head_dim)
        self.norm = nn.BatchNorm2d(dim * expand_ratio)
        self.act = nn.GELU()
        self.fuse = nn.Conv2d(dim * expand_ratio, dim, 1)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        v = self.v(x)
        s = self.s(x).permute(0, 3, 1, 2).chunk(self.heads, dim=1)
        s = torch.stack([conv(part) for conv, part in zip(self.convs, s)], dim=2).reshape(B, C, H, W)
        s = self.fuse(self.act(self.norm(self.aggregate(s))))
        return self.proj(s.permute(0, 2, 3, 1) * v)


class SamBlock(nn.Module):
    """SMT block: LN, SAM, residual; LN, conv-MLP, residual (optional layer scale)."""

    def __init__(self, dim_in: int, dim: int, params: dict[str, Any], stride: int = 1,
                 drop_path: float = 0.0, feat_size: tuple[int, int] = (7, 7)) -> None:
        super().__init__()
        assert dim_in == dim and stride == 1, "SAM blocks keep width and resolution"
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ScaleAwareModulation(dim, params["heads"], params["expand_ratio"])
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ConvMlp(dim, int(dim * params["mlp_ratio"]))
        self.ls1 = layer_scale(dim, params["layer_scale"])
        self.ls2 = layer_scale(dim, params["layer_scale"])
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """SMT's official init: fan-out normal convs (groups counted), trunc-normal .02 linears."""
        init_module(self, "van")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)))

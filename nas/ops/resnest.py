"""ResNeSt's split attention (ResNeSt: Split-Attention Networks, Zhang et al., CVPRW 2022).

The input's channels form K cardinal groups (cardinality); each group has R splits (radix), each
split a k x k conv transform of its cardinal group's input (the paper's U_i = F_i(X)), BN, ReLU. Per
cardinal group the splits are summed, globally pooled, passed through a grouped two-layer MLP
(1x1 conv to `inter` channels, BN, ReLU, 1x1 conv to R x channels) and turned into attention
weights: a softmax across the R splits (r-softmax), or a sigmoid when R = 1 (an SE-style channel
gate on the single split). The output is the attention-weighted sum of the splits.

Width agnostic: the cardinality in use is the largest divisor of the width <= the requested one
(`resnest_cardinality`); inter = max(width * R // reduction, 32) rounded up to a multiple of it (the
official code's max(., 32)). In the block this is the spatial mixer of the conv-variant block.

Counting: the split conv (dim -> R * dim, groups K), the two attention 1x1 convs on the pooled 1x1
map, the BNs; pooling, softmax/sigmoid and the weighted sum are free. All convs are nn.Conv2d.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..counting import count_resnest, resnest_cardinality, resnest_inter
from .mixer import MixerBlock

__all__ = ["SplitAttention", "ResNeStBlock", "count_resnest", "resnest_cardinality", "resnest_inter"]


class SplitAttention(nn.Module):
    def __init__(self, dim: int, kernel: int = 3, radix: int = 2, cardinality: int = 1, reduction: int = 4) -> None:
        super().__init__()
        card = resnest_cardinality(dim, cardinality)
        inter = resnest_inter(dim, radix, reduction, card)
        self.dim, self.radix, self.cardinality = dim, radix, card
        self.conv = nn.Conv2d(dim, dim * radix, kernel, padding=kernel // 2, groups=card, bias=False)
        self.bn0 = nn.BatchNorm2d(dim * radix)
        self.act = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(dim, inter, 1, groups=card)
        self.bn1 = nn.BatchNorm2d(inter)
        self.fc2 = nn.Conv2d(inter, dim * radix, 1, groups=card)

    def splits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, R, C, H, W): the R split transforms, each channel c of split r in cardinal group c // (C/K).

        The grouped conv emits, per cardinal group, R blocks of C/K channels; they are regrouped so that
        split r holds its C/K channels of every cardinal group, in channel order.
        """
        b, _, h, w = x.shape
        u = self.act(self.bn0(self.conv(x)))
        u = u.view(b, self.cardinality, self.radix, self.dim // self.cardinality, h, w).transpose(1, 2)
        return u.reshape(b, self.radix, self.dim, h, w)

    def attention(self, splits: torch.Tensor) -> torch.Tensor:
        """(B, R, C) weights: softmax across the R splits per channel, or a sigmoid gate when R = 1."""
        b = splits.shape[0]
        s = splits.sum(1).mean((2, 3), keepdim=True)
        a = self.fc2(self.act(self.bn1(self.fc1(s))))  # (B, R*C): per cardinal group, R blocks of C/K
        a = a.view(b, self.cardinality, self.radix, self.dim // self.cardinality).transpose(1, 2)
        a = a.reshape(b, self.radix, self.dim)
        return torch.softmax(a, dim=1) if self.radix > 1 else torch.sigmoid(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.splits(x)
        return (u * self.attention(u)[..., None, None]).sum(1)


class ResNeStBlock(MixerBlock):
    """Split attention (k x k, radix R, cardinality K) as the spatial mixer of the conv-variant block."""

    def __init__(self, dim_in: int, dim: int, params: dict[str, Any], stride: int = 1,
                 drop_path: float = 0.0, feat_size: tuple[int, int] = (7, 7)) -> None:
        assert dim_in == dim and stride == 1, "ResNeSt blocks keep width and resolution"
        mixer = SplitAttention(dim, params["kernel"], params["radix"], params["cardinality"], params["reduction"])
        super().__init__(mixer, dim, params, drop_path)

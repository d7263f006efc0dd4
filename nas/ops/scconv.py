"""Self-calibrated convolution (SCNet, CVPR 2020) as the spatial mixer of the conv-variant block.

The channels split in two halves. X1 (the first dim - dim // 2) is self-calibrated:
T1 = AvgPool_r(X1), X1' = Up(BN(K2 * T1)) (bilinear, back to X1's size), Y1' = BN(K3 * X1) *
sigmoid(X1 + X1'), Y1 = BN(K4 * Y1'); X2 is a plain conv Y2 = BN(K1 * X2). Output ReLU([Y1, Y2]) as
in the SCNet bottleneck. K1..K4 are dense k x k convs (no bias). The pooling uses ceil mode, so maps
smaller than r (or not divisible by r) still pool to ceil(H / r) x ceil(W / r).

Counting: the four convs (K2 at the pooled size), the BNs; pooling, the bilinear upsampling, the
sigmoid gate and the product are free. All convs are nn.Conv2d (sparsity masks apply).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..counting import count_scconv, pooled_size
from .mixer import MixerBlock

__all__ = ["SelfCalibratedConv", "SCConvBlock", "count_scconv", "pooled_size"]


def _conv_bn(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout))


class SelfCalibratedConv(nn.Module):
    def __init__(self, dim: int, kernel: int = 3, pooling: int = 4) -> None:
        super().__init__()
        self.c1 = dim - dim // 2  # the self-calibrated half
        c2 = dim // 2
        self.pool = nn.AvgPool2d(pooling, pooling, ceil_mode=True)
        self.k1 = _conv_bn(c2, c2, kernel)
        self.k2 = _conv_bn(self.c1, self.c1, kernel)
        self.k3 = _conv_bn(self.c1, self.c1, kernel)
        self.k4 = _conv_bn(self.c1, self.c1, kernel)
        self.act = nn.ReLU(inplace=True)

    def calibration(self, x1: torch.Tensor) -> torch.Tensor:
        """sigmoid(X1 + Up(F2(AvgPool_r(X1)))): the gate from the down-sampled view."""
        up = F.interpolate(self.k2(self.pool(x1)), size=x1.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(x1 + up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, :self.c1], x[:, self.c1:]
        y1 = self.k4(self.k3(x1) * self.calibration(x1))
        return self.act(torch.cat([y1, self.k1(x2)], dim=1))


class SCConvBlock(MixerBlock):
    """A self-calibrated conv (k x k, pooling r) as the spatial mixer of the conv-variant block."""

    def __init__(self, dim_in: int, dim: int, params: dict[str, Any], stride: int = 1,
                 drop_path: float = 0.0, feat_size: tuple[int, int] = (7, 7)) -> None:
        assert dim_in == dim and stride == 1, "SCConv blocks keep width and resolution"
        super().__init__(SelfCalibratedConv(dim, params["kernel"], params["pooling"]), dim, params, drop_path)

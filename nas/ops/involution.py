"""Involution (Li et al., CVPR 2021): a K x K kernel generated at each position from that position.

The kernel generator is phi(X_ij) = W1 sigma(W0 X_ij): a 1x1 conv to C / r channels, BN, ReLU, and a
1x1 conv to K*K*G; each of the G channel groups (C / G channels each) shares its position's kernel:
Y[c, i, j] = sum_{u,v} H[g(c), u, v, i, j] * X[c, i + u - K//2, j + v - K//2], g(c) = c // (C / G).

Width agnostic: G is the largest divisor of the width <= width // group_channels (the paper uses 16
channels per group); the reduction keeps at least one channel. In the block this is the spatial mixer
of the conv-variant block (RedNet puts involution where ResNet has its 3x3 conv).

Counting: the two generator 1x1 convs (nn.Conv2d, sparsity masks apply), the BN, and the
application's K*K*C*H*W MACs, which run as a batched matmul (einsum) so that torch's FLOP counter sees
them too; unfolding the patches is free.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..counting import count_involution, involution_groups, involution_reduced
from .mixer import MixerBlock

__all__ = ["Involution2d", "InvolutionBlock", "count_involution", "involution_groups", "involution_reduced"]


class Involution2d(nn.Module):
    def __init__(self, dim: int, kernel: int = 7, group_channels: int = 16, reduction: int = 4) -> None:
        super().__init__()
        self.kernel = kernel
        self.groups = involution_groups(dim, group_channels)
        reduced = involution_reduced(dim, reduction)
        self.reduce = nn.Conv2d(dim, reduced, 1, bias=False)
        self.norm = nn.BatchNorm2d(reduced)
        self.act = nn.ReLU(inplace=True)
        self.span = nn.Conv2d(reduced, kernel * kernel * self.groups, 1)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """(B, G, K*K, H, W): each position's kernel per channel group, row-major over the window."""
        b, _, h, w = x.shape
        return self.span(self.act(self.norm(self.reduce(x)))).view(b, self.groups, self.kernel ** 2, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g, kk = self.groups, self.kernel ** 2
        patches = F.unfold(x, self.kernel, padding=self.kernel // 2).view(b, g, c // g, kk, h * w)
        y = torch.einsum("bgkl,bgckl->bgcl", self.kernels(x).view(b, g, kk, h * w), patches)
        return y.reshape(b, c, h, w)


class InvolutionBlock(MixerBlock):
    """Involution (K x K, G groups, reduction r) as the spatial mixer of the conv-variant block."""

    def __init__(self, dim_in: int, dim: int, params: dict[str, Any], stride: int = 1,
                 drop_path: float = 0.0, feat_size: tuple[int, int] = (7, 7)) -> None:
        assert dim_in == dim and stride == 1, "Involution blocks keep width and resolution"
        mixer = Involution2d(dim, params["kernel"], params["group_channels"], params["reduction"])
        super().__init__(mixer, dim, params, drop_path)

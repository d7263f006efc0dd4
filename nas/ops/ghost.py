"""GhostNet's Ghost module and Ghost bottleneck (CVPR 2020).

A Ghost module makes m = ceil(out / ratio) "intrinsic" channels with a primary conv (k x k, BN,
ReLU) and the remaining out - m "ghost" channels with cheap depthwise d x d convs of the intrinsic
ones (ratio - 1 per intrinsic channel, BN, ReLU); the output is [intrinsic, ghosts][:out].
The block is the paper's stride-1 Ghost bottleneck: Ghost module (dim -> mlp_ratio * dim, ReLU),
Ghost module (-> dim, no ReLU), residual (SE left out).

Counting: both convs as built, including the cheap channels cut off by the [:out] slice (they are
computed), BN parameters; all convs are nn.Conv2d (sparsity masks apply).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..counting import count_ghost, count_ghost_module, ghost_primary_channels
from .init import init_module
from .layers import DropPath

__all__ = ["GhostModule", "GhostBottleneck", "count_ghost", "count_ghost_module", "ghost_primary_channels"]


class GhostModule(nn.Module):
    def __init__(self, cin: int, cout: int, ratio: int = 2, kernel: int = 1, dw_kernel: int = 3,
                 relu: bool = True) -> None:
        super().__init__()
        self.cout = cout
        init = ghost_primary_channels(cout, ratio)
        act = nn.ReLU(inplace=True) if relu else nn.Identity()
        self.primary = nn.Sequential(nn.Conv2d(cin, init, kernel, padding=kernel // 2, bias=False),
                                     nn.BatchNorm2d(init), act)
        self.cheap = nn.Sequential(
            nn.Conv2d(init, init * (ratio - 1), dw_kernel, padding=dw_kernel // 2, groups=init, bias=False),
            nn.BatchNorm2d(init * (ratio - 1)), nn.ReLU(inplace=True) if relu else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], dim=1)[:, :self.cout]


class GhostBottleneck(nn.Module):
    """GhostNet's stride-1 G-bneck: expanding Ghost module, projecting Ghost module, residual."""

    def __init__(self, dim_in: int, dim: int, params: dict[str, Any], stride: int = 1,
                 drop_path: float = 0.0, feat_size: tuple[int, int] = (7, 7)) -> None:
        super().__init__()
        assert dim_in == dim and stride == 1, "Ghost blocks keep width and resolution"
        hidden = int(params["mlp_ratio"] * dim)
        shape = dict(ratio=params["ratio"], kernel=params["kernel"], dw_kernel=params["dw_kernel"])
        self.ghost1 = GhostModule(dim, hidden, relu=True, **shape)
        self.ghost2 = GhostModule(hidden, dim, relu=False, **shape)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """TF-EfficientNet's fan-out normal convs (GhostNet is a MobileNet-family network)."""
        init_module(self, "efficientnet")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.ghost2(self.ghost1(x)))

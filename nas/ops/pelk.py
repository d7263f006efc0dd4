"""Peripheral convolution and the PeLK block (Chen et al., PeLK, CVPR 2024, arXiv 2403.07589).

A K x K depthwise kernel is parameterised by a much smaller one through axis-symmetric sharing: cells
of size 1 in a fine-grained centre, then cells that double in size toward the periphery (the last one
takes what is left of the radius). For K=51 with a 5x5 centre the half-grid from the edge inward is
[9, 8, 4, 2, 1, 1, 1]: a 13x13 shared kernel. The parameter count thus grows like O(log K).

A kernel-wise positional embedding h (channels x K x K, one per stage, shared by its blocks) enters
as Y(x, y) = sum_ij w(i, j) * (X(x+i, y+j) + h(i, j)); with zero padding the h term is the same at
every position, so it is added as a per-channel bias sum_ij w(i, j) h(i, j), exactly.
Only `conv_ratio` (3/8) of the channels go through the conv; the rest pass unchanged.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.layers import DropPath, Mlp, trunc_normal_

from .base import Count, depthwise_conv2d, linear_count, norm_count
from .conv import layer_scale

__all__ = ["peripheral_half_grid", "peripheral_index", "PeripheralConv", "PelkBlock", "count_pelk",
           "pelk_conv_channels"]


def peripheral_half_grid(kernel: int, center: int) -> list[int]:
    """Sizes of the sharing cells along one half-axis, from the centre outward (centre pixel first)."""
    radius, center_radius = kernel // 2, center // 2
    cells = [1] * (center_radius + 1)
    remaining, size = radius - center_radius, 2
    while remaining > 0:
        cells.append(min(size, remaining))
        remaining -= cells[-1]
        size *= 2
    return cells


def peripheral_index(kernel: int, center: int) -> torch.Tensor:
    """For each of the `kernel` positions along an axis, its index in the shared (small) kernel."""
    cells = peripheral_half_grid(kernel, center)
    cell_of_offset = [c for c, size in enumerate(cells) for _ in range(size)]
    n = len(cells)
    index = [n - 1 + (1 if o > 0 else -1) * cell_of_offset[abs(o)] for o in range(-(kernel // 2), kernel // 2 + 1)]
    return torch.tensor(index, dtype=torch.long)


def pelk_conv_channels(dim: int, params: dict[str, Any]) -> int:
    return int(dim * params["conv_ratio"])


class PeripheralConv(nn.Module):
    """Depthwise K x K conv whose kernel is gathered from a small shared kernel (see module doc)."""

    def __init__(self, channels: int, kernel: int, center: int) -> None:
        super().__init__()
        self.kernel_size = kernel
        index = peripheral_index(kernel, center)
        small = 2 * len(peripheral_half_grid(kernel, center)) - 1
        self.weight = nn.Parameter(torch.empty(channels, 1, small, small))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("index", index, persistent=False)
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def dense_kernel(self) -> torch.Tensor:
        """The materialised K x K kernel, constant over each sharing cell."""
        return self.weight[:, :, self.index][:, :, :, self.index]

    def forward(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None) -> torch.Tensor:
        kernel = self.dense_kernel()
        bias = self.bias
        if pos_embed is not None:  # over the whole kernel: padded positions carry h too
            bias = bias + (kernel[:, 0] * pos_embed).sum((1, 2))
        return depthwise_conv2d(x, kernel, bias)


def make_pos_embed(channels: int, kernel: int) -> nn.Parameter:
    """The kernel-wise positional embedding of one stage (trunc-normal init, as in the paper)."""
    embed = nn.Parameter(torch.zeros(channels, kernel, kernel))
    trunc_normal_(embed, std=0.02)
    return embed


class PelkBlock(nn.Module):
    """ConvNeXt-style block whose token mixer is a partial peripheral conv (3/8 of the channels)."""

    uses_pos_embed = True

    def __init__(self, dim_in: int, dim: int, params: dict[str, Any], stride: int = 1,
                 drop_path: float = 0.0, feat_size: tuple[int, int] = (7, 7)) -> None:
        super().__init__()
        assert dim_in == dim and stride == 1, "PeLK blocks keep width and resolution"
        self.conv_channels = pelk_conv_channels(dim, params)
        self.conv = PeripheralConv(self.conv_channels, params["kernel"], params["center"])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(params["mlp_ratio"] * dim), act_layer=nn.GELU)
        self.ls = layer_scale(dim, params["layer_scale"])
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None) -> torch.Tensor:
        x_conv, x_id = x.split([self.conv_channels, x.shape[1] - self.conv_channels], dim=1)
        y = torch.cat([self.conv(x_conv, pos_embed), x_id], dim=1).permute(0, 2, 3, 1)
        y = self.mlp(self.norm(y)).permute(0, 3, 1, 2)
        return x + self.drop_path(self.ls(y))


def count_peripheral_conv(channels: int, kernel: int, center: int, out_hw: tuple[int, int],
                          sparsity: float) -> Count:
    """Parameters of the shared kernel; MACs of the dense K x K conv (the papers' convention).

    Masking a shared weight zeroes its whole cell, so the nonzero MACs are the expected fraction.
    """
    small = 2 * len(peripheral_half_grid(kernel, center)) - 1
    weights = channels * small * small
    zeros = int(weights * sparsity)
    macs = channels * kernel * kernel * out_hw[0] * out_hw[1]
    return Count(weights + channels, macs, weights - zeros + channels, macs * (weights - zeros) / weights)


def count_pelk(dim_in: int, dim: int, params: dict[str, Any], out_hw: tuple[int, int],
               stride: int = 1, sparsity: float = 0.0) -> Count:
    """One block; the stage's positional embedding is counted by the stage."""
    tokens = out_hw[0] * out_hw[1]
    hidden = int(params["mlp_ratio"] * dim)
    channels = pelk_conv_channels(dim, params)
    return (count_peripheral_conv(channels, params["kernel"], params["center"], out_hw, sparsity)
            + norm_count(dim)
            + linear_count(dim, hidden, tokens, sparsity=sparsity)
            + linear_count(hidden, dim, tokens, sparsity=sparsity)
            + Count(dim, 0, dim, 0) * int(params["layer_scale"] > 0))

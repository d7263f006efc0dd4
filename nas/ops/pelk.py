"""Peripheral convolution and the PeLK block (Chen et al., PeLK, CVPR 2024, arXiv 2403.07589).

A K x K depthwise kernel is parameterised by a much smaller one through axis-symmetric sharing: cells
of size 1 in a fine-grained centre, then cells that double in size toward the periphery (the last one
takes what is left of the radius). For K=51 with a 5x5 centre the half-grid from the edge inward is
[9, 8, 4, 2, 1, 1, 1]: a 13x13 shared kernel. The parameter count thus grows like O(log K).

A kernel-wise positional embedding h (channels x K x K, one per stage, shared by its blocks) enters
as Y(x, y) = sum_ij w(i, j) * (X(x+i, y+j) + h(i, j)); with zero padding the h term is the same at
every position, so it is added as a per-channel bias sum_ij w(i, j) h(i, j), exactly.
Only `conv_ratio` (3/8) of the channels go through the conv; the rest pass unchanged.

Because the kernel is constant over each cell, the conv is also a sum over cells of the shared weight
times box sums of the input (`peripheral_conv2d`): its cost grows with the number of cells (13 x 13
for K=51) instead of K^2. `PeripheralConv` takes that path where it measured faster than the dense
depthwise conv (`use_block_sum`); FLOPs are still counted as the dense K x K conv.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..counting import (
    block_sum_pays,
    cells_in_reach,
    count_pelk,
    pelk_conv_channels,
    peripheral_bounds,
    peripheral_half_grid,
)
from .base import depthwise_conv2d, fast_paths_enabled, reach, rules_measured_for
from .conv import layer_scale
from .init import init_module
from .layers import DropPath, Mlp, trunc_normal_

__all__ = ["peripheral_half_grid", "peripheral_index", "peripheral_bounds", "peripheral_conv2d", "use_block_sum",
           "PeripheralConv", "PelkBlock", "count_pelk", "pelk_conv_channels"]


def peripheral_index(kernel: int, center: int) -> torch.Tensor:
    """For each of the `kernel` positions along an axis, its index in the shared (small) kernel."""
    cells = peripheral_half_grid(kernel, center)
    cell_of_offset = [c for c, size in enumerate(cells) for _ in range(size)]
    n = len(cells)
    index = [n - 1 + (1 if o > 0 else -1) * cell_of_offset[abs(o)] for o in range(-(kernel // 2), kernel // 2 + 1)]
    return torch.tensor(index, dtype=torch.long)


@functools.lru_cache(maxsize=64)
@torch.inference_mode(False)  # cached: must stay usable by autograd after a first call in inference
def _row_box_matrix(bounds: tuple[int, ...], size: int) -> torch.Tensor:
    """(size, cells * size) 0/1 matrix M with M[h, j * size + h'] = 1 where h' - h lies in cell j: the
    row box sums of all cells, weighted and summed, become one GEMM."""
    lo, hi = torch.tensor(bounds[:-1]).view(-1, 1, 1), torch.tensor(bounds[1:]).view(-1, 1, 1)
    offset = torch.arange(size).view(1, 1, -1) - torch.arange(size).view(1, -1, 1)  # [cell, h, h'] -> h' - h
    inside = (offset >= lo) & (offset < hi)
    return inside.permute(1, 0, 2).reshape(size, -1).float()


def peripheral_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, kernel: int,
                      center: int) -> torch.Tensor:
    """The 'same' depthwise conv with the K x K kernel `weight[:, :, peripheral_index][..., peripheral_index]`,
    computed from the shared (small) `weight` without materialising it, exactly (up to rounding).

    Columns: a prefix sum along W read at the clipped cell bounds gives every column box sum, and the
    column-differenced weight contracts them per row cell (one small matmul per image and channel).
    Rows: the row box sums of those maps, summed over row cells, are one GEMM with a 0/1 matrix.
    Cells beyond the map's reach are dropped, so small maps cost little.
    """
    n, c, h, w = x.shape
    rx = reach(kernel, 1, w)
    r0, r1, row_bounds = cells_in_reach(kernel, center, reach(kernel, 1, h))
    c0, c1, col_bounds = cells_in_reach(kernel, center, rx)
    # sum_j w_j (P[b_j+1] - P[b_j]) = sum_j (w_j-1 - w_j) P[b_j]: read the prefix sums once per bound
    shared = F.pad(weight[:, 0, r0:r1, c0:c1], (1, 1))
    shared = shared[..., :-1] - shared[..., 1:]  # (C, row cells, column bounds)
    prefix = F.pad(x, (rx + 1, rx)).cumsum(-1)
    cols = torch.stack([prefix[..., rx + b:rx + b + w] for b in col_bounds], 2)  # (N, C, column bounds, H, W)
    rows = (shared @ cols.flatten(3)).view(n, c, -1, w)  # (N, C, row cells * H, W)
    out = _row_box_matrix(row_bounds, h).to(x) @ rows
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def use_block_sum(kernel: int, center: int, height: int, width: int, training: bool) -> bool:
    """The algorithm rule for `PeripheralConv`: box sums over the sharing cells (`peripheral_conv2d`)
    or the dense depthwise conv. Never inside `dense_convolutions()`."""
    if not fast_paths_enabled():
        return False
    return block_sum_pays(kernel, center, reach(kernel, 1, height), reach(kernel, 1, width),
                          min(height, width), max(height, width), training)


def _wide(x: torch.Tensor) -> bool:
    """Box sums are differences of prefix sums: float32 or wider only, not under autocast."""
    return x.dtype in (torch.float32, torch.float64) and not (
        x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type))


class PeripheralConv(nn.Module):
    """Depthwise K x K conv whose kernel is gathered from a small shared kernel (see module doc)."""

    def __init__(self, channels: int, kernel: int, center: int) -> None:
        super().__init__()
        self.kernel_size = kernel
        self.center = center
        index = peripheral_index(kernel, center)
        small = 2 * len(peripheral_half_grid(kernel, center)) - 1
        self.weight = nn.Parameter(torch.empty(channels, 1, small, small))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("index", index, persistent=False)
        # for each tap of the K x K kernel, its position in the flattened shared kernel
        self.register_buffer("flat_index", index.view(-1, 1) * small + index.view(1, -1), persistent=False)
        trunc_normal_(self.weight, std=0.02)  # PeLK / SLaK: trunc-normal .02 for every conv kernel

    def dense_kernel(self) -> torch.Tensor:
        """The materialised K x K kernel, constant over each sharing cell."""
        return self._gather(self.weight, self.kernel_size // 2)

    def _gather(self, weight: torch.Tensor, radius: int) -> torch.Tensor:
        """The central (2 radius + 1)^2 taps of the dense kernel, as one index_select (about 6x faster than
        indexing with `index` twice)."""
        half, side = self.kernel_size // 2, 2 * radius + 1
        flat = self.flat_index[half - radius:half + radius + 1, half - radius:half + radius + 1].flatten()
        return weight.flatten(1).index_select(1, flat).view(weight.shape[0], 1, side, side)

    def pos_embed_bias(self, weight: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
        """sum_ij w(i, j) h(i, j) over the whole K x K kernel (padded positions carry h too), with h summed
        per sharing cell first, so that the dense kernel is never built for it (and no matmul shows up
        in the FLOP count)."""
        cells = pos_embed.new_zeros(pos_embed.shape[0], weight[0].numel())
        cells = cells.index_add(1, self.flat_index.flatten(), pos_embed.flatten(1))
        return (weight.flatten(1) * cells).sum(1)

    def forward(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None) -> torch.Tensor:
        weight = self.weight  # read once: a sparsity parametrization recomputes it on every access
        bias = self.bias if pos_embed is None else self.bias + self.pos_embed_bias(weight, pos_embed)
        height, width = x.shape[-2:]
        if not rules_measured_for(x):
            return depthwise_conv2d(x, self._gather(weight, self.kernel_size // 2), bias)
        training = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        if use_block_sum(self.kernel_size, self.center, height, width, training) and _wide(x):
            return peripheral_conv2d(x, weight, bias, self.kernel_size, self.center)
        # materialise only the taps that can touch the map (all of them inside dense_convolutions())
        radius = max(reach(self.kernel_size, 1, height), reach(self.kernel_size, 1, width))
        return depthwise_conv2d(x, self._gather(weight, radius), bias)


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
        self.init_weights()

    def init_weights(self) -> None:
        """PeLK builds on SLaK / ConvNeXt: trunc-normal .02 linears (the shared kernel inits itself so)."""
        init_module(self, "convnext")

    def forward(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None) -> torch.Tensor:
        x_conv, x_id = x.split([self.conv_channels, x.shape[1] - self.conv_channels], dim=1)
        y = torch.cat([self.conv(x_conv, pos_embed), x_id], dim=1).permute(0, 2, 3, 1)
        y = self.mlp(self.norm(y)).permute(0, 3, 1, 2)
        return x + self.drop_path(self.ls(y))

"""The counting rules: parameters and MACs of every block family, stem and downsampling layer, from
shapes alone.

They live here, apart from the operator modules (`nas.ops`, which need torch), and import
nothing but the standard library, so that counting (`nas.count`) and budgets (`nas.budget`) cost no
torch import. Each operator module imports its rule from here (and the shape helpers its module
shares with the rule); `nas.ops.BLOCKS` pairs the module classes with `BLOCK_COUNTS`. The sections
follow the files of `nas.ops`; each module's docstring says what its family's count includes.

Counting follows the seed papers' convention: multiply-accumulates (MACs) of convolutions, linear
layers and the attention matmuls; norms, activations, softmax, pooling, biases and element-wise
products cost nothing. Parameters are exact. `sparsity` is the fraction of a conv/linear weight held
at zero by a fixed mask (:mod:`nas.sparse`), which removes exactly ``int(numel * sparsity)`` weights.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Count", "conv_count", "linear_count", "norm_count", "matmul_count", "BLOCK_COUNTS",
    "count_msa",
    "count_convnext", "se_channels", "count_pool_shortcut", "count_mbconv",
    "count_doconv",
    "dynconv_hidden", "count_condconv", "count_dynconv",
    "ghost_primary_channels", "count_ghost_module", "count_ghost",
    "involution_groups", "involution_reduced", "count_involution",
    "lka_kernels", "count_conv_ffn", "count_lka",
    "largest_divisor", "count_mixer_block", "dense_count",
    "peripheral_half_grid", "pelk_conv_channels", "peripheral_bounds", "cells_in_reach", "block_sum_pays",
    "BLOCK_SUM_MIN_TAPS_PER_CELL", "BLOCK_SUM_TRAIN_SIZES", "count_peripheral_conv", "count_pelk",
    "resnest_cardinality", "resnest_inter", "count_resnest",
    "pooled_size", "count_scconv",
    "count_conv_mlp", "count_sam",
    "count_stem", "count_downsample",
]


# --- Shared: a module's Count and the per-layer rules (ops/base.py)

@dataclass(frozen=True)
class Count:
    """Parameters and MACs of a module; the nonzero_* figures leave out masked (sparse) weights."""

    params: int = 0
    flops: int = 0
    nonzero_params: int = 0
    nonzero_flops: float = 0.0

    def __add__(self, other: Count) -> Count:
        return Count(self.params + other.params, self.flops + other.flops,
                     self.nonzero_params + other.nonzero_params, self.nonzero_flops + other.nonzero_flops)

    def __mul__(self, times: int) -> Count:
        return Count(self.params * times, self.flops * times,
                     self.nonzero_params * times, self.nonzero_flops * times)

    __rmul__ = __mul__


def conv_count(cin: int, cout: int, kernel: int | tuple[int, int], out_hw: tuple[int, int],
               groups: int = 1, bias: bool = True, sparsity: float = 0.0) -> Count:
    """A Conv2d producing an `out_hw` map; a 1x1 conv on tokens is a linear layer."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    weights = cout * (cin // groups) * kh * kw
    macs = weights * out_hw[0] * out_hw[1]
    zeros = int(weights * sparsity)
    params = weights + (cout if bias else 0)
    return Count(params, macs, params - zeros, macs * (weights - zeros) / weights)


def linear_count(cin: int, cout: int, tokens: int, bias: bool = True, sparsity: float = 0.0) -> Count:
    return conv_count(cin, cout, 1, (tokens, 1), bias=bias, sparsity=sparsity)


def norm_count(channels: int, affine: bool = True) -> Count:
    params = 2 * channels if affine else 0
    return Count(params, 0, params, 0)


def matmul_count(macs: int) -> Count:
    """Weight-free products (attention's Q.K^T and A.V)."""
    return Count(0, macs, 0, macs)


# --- Attention (ops/attention.py)

def count_msa(dim_in: int, dim: int, params: dict[str, Any], out_hw: tuple[int, int],
              stride: int = 1, sparsity: float = 0.0) -> Count:
    tokens = out_hw[0] * out_hw[1]
    heads = params["heads"]
    attn = (linear_count(dim_in, 3 * dim, tokens, bias=params["qkv_bias"], sparsity=sparsity)
            + matmul_count(2 * tokens * tokens * dim)  # Q.K^T and A.V over all heads
            + linear_count(dim, dim, tokens, sparsity=sparsity))
    if params["rel_pos"]:
        attn += Count(heads * (2 * out_hw[0] - 1) * (2 * out_hw[1] - 1), 0,
                      heads * (2 * out_hw[0] - 1) * (2 * out_hw[1] - 1), 0)
    if params["v_conv"]:
        attn += conv_count(dim, dim, 3, out_hw, groups=dim, sparsity=sparsity)
    hidden = int(dim * params["mlp_ratio"])
    if params["mlp"] == "conv":
        mlp = count_conv_mlp(dim, hidden, out_hw, sparsity)
    else:
        mlp = (linear_count(dim, hidden, tokens, sparsity=sparsity)
               + linear_count(hidden, dim, tokens, sparsity=sparsity))
    scale = Count(dim, 0, dim, 0) * (2 * int(params["layer_scale"] > 0))
    return (count_pool_shortcut(dim_in, dim, out_hw, sparsity) + norm_count(dim_in) + attn
            + norm_count(dim) + mlp + scale)


# --- ConvNeXt and MBConv (ops/conv.py)

def count_convnext(dim_in: int, dim: int, params: dict[str, Any], out_hw: tuple[int, int],
                   stride: int = 1, sparsity: float = 0.0) -> Count:
    tokens = out_hw[0] * out_hw[1]
    hidden = int(params["mlp_ratio"] * dim)
    return (conv_count(dim, dim, params["kernel"], out_hw, groups=dim, sparsity=sparsity)
            + norm_count(dim)
            + linear_count(dim, hidden, tokens, sparsity=sparsity)
            + linear_count(hidden, dim, tokens, sparsity=sparsity)
            + Count(dim, 0, dim, 0) * int(params["layer_scale"] > 0))


def se_channels(dim: int, params: dict[str, Any]) -> int:
    """The squeeze-excite width of an MBConv block (0: no SE)."""
    return max(1, round(dim * params["se_ratio"])) if params["se_ratio"] > 0 else 0


def count_pool_shortcut(dim_in: int, dim: int, out_hw: tuple[int, int], sparsity: float) -> Count:
    return conv_count(dim_in, dim, 1, out_hw, sparsity=sparsity) if dim_in != dim else Count()


def count_mbconv(dim_in: int, dim: int, params: dict[str, Any], out_hw: tuple[int, int],
                 stride: int = 1, sparsity: float = 0.0) -> Count:
    mid = int(dim * params["expand_ratio"])
    se = se_channels(dim, params)
    count = (count_pool_shortcut(dim_in, dim, out_hw, sparsity)
             + norm_count(dim_in)
             + conv_count(dim_in, mid, 1, out_hw, bias=False, sparsity=sparsity)
             + norm_count(mid)
             + conv_count(mid, mid, params["kernel"], out_hw, groups=mid, bias=False, sparsity=sparsity)
             + norm_count(mid)
             + conv_count(mid, dim, 1, out_hw, sparsity=sparsity))
    if se:
        count += conv_count(mid, se, 1, (1, 1), sparsity=sparsity) + conv_count(se, mid, 1, (1, 1), sparsity=sparsity)
    return count


# --- DO-Conv (ops/doconv.py)

def count_doconv(dim_in: int, dim: int, params: dict[str, Any], out_hw: tuple[int, int],
                 stride: int = 1, sparsity: float = 0.0) -> Count:
    k, d_mul = params["kernel"], params["d_mul"]
    params_wd = dim * d_mul + dim * k * k * d_mul  # W (depthwise: C x 1 x D_mul) and D (C x k*k x D_mul)
    mixer = dense_count(params_wd, dim * k * k * out_hw[0] * out_hw[1])  # the folded depthwise conv
    return count_mixer_block(mixer, dim, params, out_hw, sparsity)


# --- CondConv and DynamicConv (ops/dynamic.py)

def dynconv_hidden(cin: int) -> int:
    """Width of DynamicConv's attention MLP: the paper's reduction ratio 4 (at least 4 units)."""
    return max(4, cin // 4)


def _dynamic_dw_count(dim: int, kernel: int, n: int, out_hw: tuple[int, int]) -> Count:
    weights = dim * kernel * kernel  # one depthwise kernel
    return dense_count(n * weights, weights * out_hw[0] * out_hw[1]) + matmul_count(n * weights)


def count_condconv(dim_in: int, dim: int, params: dict[str, Any], out_hw: tuple[int, int],
                   stride: int = 1, sparsity: float = 0.0) -> Count:
    e = params["experts"]
    mixer = _dynamic_dw_count(dim, params["kernel"], e, out_hw) + linear_count(dim, e, 1, sparsity=sparsity)
    return count_mixer_block(mixer, dim, params, out_hw, sparsity)


def count_dynconv(dim_in: int, dim: int, params: dict[str, Any], out_hw: tuple[int, int],
                  stride: int = 1, sparsity: float = 0.0) -> Count:
    k, hidden = params["num_kernels"], dynconv_hidden(dim)
    mixer = (_dynamic_dw_count(dim, params["kernel"], k, out_hw)
             + linear_count(dim, hidden, 1, sparsity=sparsity) + linear_count(hidden, k, 1, sparsity=sparsity))
    return count_mixer_block(mixer, dim, params, out_hw, sparsity)


# --- Ghost (ops/ghost.py)

def ghost_primary_channels(cout: int, ratio: int) -> int:
    return math.ceil(cout / ratio)


def count_ghost_module(cin: int, cout: int, ratio: int, kernel: int, dw_kernel: int, out_hw: tuple[int, int],
                       sparsity: float = 0.0) -> Count:
    init = ghost_primary_channels(cout, ratio)
    cheap = init * (ratio - 1)
    return (conv_count(cin, init, kernel, out_hw, bias=False, sparsity=sparsity) + norm_count(init)
            + conv_count(init, cheap, dw_kernel, out_hw, groups=init, bias=False, sparsity=sparsity)
            + norm_count(cheap))


def count_ghost(dim_in: int, dim: int, params: dict[str, Any], out_hw: tuple[int, int],
                stride: int = 1, sparsity: float = 0.0) -> Count:
    hidden = int(params["mlp_ratio"] * dim)
    shape = (params["ratio"], params["kernel"], params["dw_kernel"], out_hw)
    return (count_ghost_module(dim, hidden, *shape, sparsity=sparsity)
            + count_ghost_module(hidden, dim, *shape, sparsity=sparsity))


# --- Involution (ops/involution.py)

def involution_groups(dim: int, group_channels: int) -> int:
    return largest_divisor(dim, max(1, dim // group_channels))


def involution_reduced(dim: int, reduction: int) -> int:
    return max(1, dim // reduction)


def count_involution(dim_in: int, dim: int, params: dict[str, Any], out_hw: tuple[int, int],
                     stride: int = 1, sparsity: float = 0.0) -> Count:
    k = params["kernel"]
    g = involution_groups(dim, params["group_channels"])
    reduced = involution_reduced(dim, params["reduction"])
    mixer = (conv_count(dim, reduced, 1, out_hw, bias=False, sparsity=sparsity) + norm_count(reduced)
             + conv_count(reduced, k * k * g, 1, out_hw, sparsity=sparsity)
             + matmul_count(k * k * dim * out_hw[0] * out_hw[1]))
    return count_mixer_block(mixer, dim, params, out_hw, sparsity)


# --- LKA / VAN (ops/lka.py)

def lka_kernels(kernel: int, dilation: int) -> tuple[int, int]:
    """The local and the dilated kernel sizes that decompose a `kernel` x `kernel` receptive field."""
    return 2 * dilation - 1, math.ceil(kernel / dilation)


def count_conv_ffn(dim: int, hidden: int, out_hw: tuple[int, int], sparsity: float) -> Count:
    return (conv_count(dim, hidden, 1, out_hw, sparsity=sparsity)
            + conv_count(hidden, hidden, 3, out_hw, groups=hidden, sparsity=sparsity)
            + conv_count(hidden, dim, 1, out_hw, sparsity=sparsity))


def count_lka(dim_in: int, dim: int, params: dict[str, Any], out_hw: tuple[int, int],
              stride: int = 1, sparsity: float = 0.0) -> Count:
    local, spatial = lka_kernels(params["kernel"], params["dilation"])
    attn = (conv_count(dim, dim, 1, out_hw, sparsity=sparsity) * 3
            + conv_count(dim, dim, local, out_hw, groups=dim, sparsity=sparsity)
            + conv_count(dim, dim, spatial, out_hw, groups=dim, sparsity=sparsity))
    scale = Count(dim, 0, dim, 0) * (2 * int(params["layer_scale"] > 0))
    return norm_count(dim) * 2 + attn + count_conv_ffn(dim, int(dim * params["mlp_ratio"]), out_hw, sparsity) + scale


# --- The conv-variant block around a mixer (ops/mixer.py)

def largest_divisor(n: int, at_most: int) -> int:
    """The largest divisor of `n` that is <= `at_most` (and >= 1): fits groups to any width."""
    return next(d for d in range(max(1, min(at_most, n)), 0, -1) if n % d == 0)


def count_mixer_block(mixer: Count, dim: int, params: dict[str, Any], out_hw: tuple[int, int],
                      sparsity: float = 0.0) -> Count:
    """The mixer's own count plus the norm, the MLP and the layer scale around it."""
    hidden = int(params["mlp_ratio"] * dim)
    return (mixer + norm_count(dim)
            + conv_count(dim, hidden, 1, out_hw, sparsity=sparsity)
            + conv_count(hidden, dim, 1, out_hw, sparsity=sparsity)
            + Count(dim, 0, dim, 0) * int(params["layer_scale"] > 0))


def dense_count(params: int, flops: int) -> Count:
    """Weights held outside nn.Conv2d/nn.Linear: never masked, so all of them are nonzero."""
    return Count(params, flops, params, flops)


# --- PeLK (ops/pelk.py)

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


def pelk_conv_channels(dim: int, params: dict[str, Any]) -> int:
    return int(dim * params["conv_ratio"])


@functools.cache
def peripheral_bounds(kernel: int, center: int) -> tuple[int, ...]:
    """Offsets at which the sharing cells along an axis begin, then the end: cell j is [b[j], b[j+1])."""
    ends = [0]
    for size in peripheral_half_grid(kernel, center):
        ends.append(ends[-1] + size)
    return tuple(sorted({1 - e for e in ends[1:]} | set(ends[1:])))


@functools.lru_cache(maxsize=256)
def cells_in_reach(kernel: int, center: int, radius: int) -> tuple[int, int, tuple[int, ...]]:
    """The cells within `radius` taps of the centre (first, last + 1) and their bounds clipped to it: with
    the reach of a map as radius, the others only ever see zero padding."""
    bounds = peripheral_bounds(kernel, center)
    cells = [j for j in range(len(bounds) - 1) if bounds[j + 1] > -radius and bounds[j] <= radius]
    clipped = [max(bounds[j], -radius) for j in cells] + [min(bounds[cells[-1] + 1], radius + 1)]
    return cells[0], cells[-1] + 1, tuple(clipped)


# PeLK's algorithm rule (`nas.ops.pelk.use_block_sum`) is arithmetic on shapes, kept here beside the cells
# it reasons about, so that latency prediction (`nas.latency`) knows the path a block takes without torch.
# Measured on a 2-core x86 CPU, 1 thread, at PeLK's shapes (benchmarks/large_kernel.py). Inference: the
# dense path (cropped kernel, oneDNN channels_last) keeps up until the kernel in reach has about 10 taps
# per sharing cell (K=49-51 on maps of 28-56 px: box sums 1.5-2x faster; 6-8 taps per cell on maps of
# 14-16 px: a tie or the dense path). Training: on maps of 14-32 px the box sums beat the FFT 1.3-3x; on
# larger maps the FFT wins, on smaller ones the direct conv. On a 1 x 1 map the conv is a per-channel
# scale, and PyTorch's 1x1 depthwise conv is slow (0.2-1.5 ms for 46-374 channels): box sums there too.
BLOCK_SUM_MIN_TAPS_PER_CELL = 10
BLOCK_SUM_TRAIN_SIZES = (14, 32)


@functools.lru_cache(maxsize=256)
def block_sum_pays(kernel: int, center: int, ry: int, rx: int, short: int, long: int, training: bool) -> bool:
    """`use_block_sum` for maps with these reaches and sides (cached: it runs on every forward)."""
    if ry == rx == 0:
        return True
    (r0, r1, _), (c0, c1, _) = cells_in_reach(kernel, center, ry), cells_in_reach(kernel, center, rx)
    taps_per_cell = (2 * ry + 1) * (2 * rx + 1) / ((r1 - r0) * (c1 - c0))
    if training:
        low, high = BLOCK_SUM_TRAIN_SIZES
        return taps_per_cell >= 2 and low <= short and long <= high
    return taps_per_cell >= BLOCK_SUM_MIN_TAPS_PER_CELL


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


# --- ResNeSt (ops/resnest.py)

def resnest_cardinality(dim: int, cardinality: int) -> int:
    return largest_divisor(dim, cardinality)


def resnest_inter(dim: int, radix: int, reduction: int, cardinality: int) -> int:
    inter = max(dim * radix // reduction, 32)
    return -(-inter // cardinality) * cardinality


def count_resnest(dim_in: int, dim: int, params: dict[str, Any], out_hw: tuple[int, int],
                  stride: int = 1, sparsity: float = 0.0) -> Count:
    r = params["radix"]
    card = resnest_cardinality(dim, params["cardinality"])
    inter = resnest_inter(dim, r, params["reduction"], card)
    mixer = (conv_count(dim, dim * r, params["kernel"], out_hw, groups=card, bias=False, sparsity=sparsity)
             + norm_count(dim * r)
             + conv_count(dim, inter, 1, (1, 1), groups=card, sparsity=sparsity) + norm_count(inter)
             + conv_count(inter, dim * r, 1, (1, 1), groups=card, sparsity=sparsity))
    return count_mixer_block(mixer, dim, params, out_hw, sparsity)


# --- SCConv (ops/scconv.py)

def pooled_size(hw: tuple[int, int], r: int) -> tuple[int, int]:
    return -(-hw[0] // r), -(-hw[1] // r)


def count_scconv(dim_in: int, dim: int, params: dict[str, Any], out_hw: tuple[int, int],
                 stride: int = 1, sparsity: float = 0.0) -> Count:
    k, c1, c2 = params["kernel"], dim - dim // 2, dim // 2
    pooled = pooled_size(out_hw, params["pooling"])
    mixer = (conv_count(c2, c2, k, out_hw, bias=False, sparsity=sparsity)
             + conv_count(c1, c1, k, pooled, bias=False, sparsity=sparsity)
             + conv_count(c1, c1, k, out_hw, bias=False, sparsity=sparsity) * 2
             + norm_count(c2) + norm_count(c1) * 3)
    return count_mixer_block(mixer, dim, params, out_hw, sparsity)


# --- SMT (ops/smt.py)

def count_conv_mlp(dim: int, hidden: int, out_hw: tuple[int, int], sparsity: float) -> Count:
    tokens = out_hw[0] * out_hw[1]
    return (linear_count(dim, hidden, tokens, sparsity=sparsity)
            + conv_count(hidden, hidden, 3, out_hw, groups=hidden, sparsity=sparsity)
            + linear_count(hidden, dim, tokens, sparsity=sparsity))


def count_sam(dim_in: int, dim: int, params: dict[str, Any], out_hw: tuple[int, int],
              stride: int = 1, sparsity: float = 0.0) -> Count:
    tokens = out_hw[0] * out_hw[1]
    heads, expand = params["heads"], params["expand_ratio"]
    head_dim = dim // heads
    sam = linear_count(dim, dim, tokens, sparsity=sparsity) * 3  # v, s, proj
    for i in range(heads):
        sam += conv_count(head_dim, head_dim, 3 + 2 * i, out_hw, groups=head_dim, sparsity=sparsity)
    sam += (conv_count(dim, dim * expand, 1, out_hw, groups=head_dim, sparsity=sparsity)
            + norm_count(dim * expand)
            + conv_count(dim * expand, dim, 1, out_hw, sparsity=sparsity))
    scale = Count(dim, 0, dim, 0) * (2 * int(params["layer_scale"] > 0))
    return norm_count(dim) * 2 + sam + count_conv_mlp(dim, int(dim * params["mlp_ratio"]), out_hw, sparsity) + scale


# --- Stems and downsampling (ops/stems.py)

def count_stem(kind: str, in_chans: int, width: int, kernel: int, norm: str, img_hw: tuple[int, int],
               sparsity: float = 0.0) -> Count:
    h2, w2 = img_hw[0] // 2, img_hw[1] // 2
    h4, w4 = img_hw[0] // 4, img_hw[1] // 4
    if kind == "overlap":
        return conv_count(in_chans, width, kernel, (h4, w4), sparsity=sparsity) + norm_count(width)
    if kind == "patch":
        return conv_count(in_chans, width, 4, (h4, w4), sparsity=sparsity) + norm_count(width)
    if kind == "conv2":
        return (conv_count(in_chans, width, kernel, (h2, w2), bias=False, sparsity=sparsity) + norm_count(width)
                + conv_count(width, width, 2, (h4, w4), sparsity=sparsity) + norm_count(width))
    if kind == "deep":
        return (conv_count(in_chans, width, kernel, (h2, w2), bias=False, sparsity=sparsity) + norm_count(width)
                + conv_count(width, width, kernel, (h2, w2), bias=False, sparsity=sparsity))
    raise ValueError(f"unknown stem {kind!r}")


def count_downsample(kind: str, dim_in: int, dim: int, out_hw: tuple[int, int], sparsity: float = 0.0) -> Count:
    if kind == "overlap":
        return conv_count(dim_in, dim, 3, out_hw, sparsity=sparsity) + norm_count(dim)
    if kind == "patch":
        return norm_count(dim_in) + conv_count(dim_in, dim, 2, out_hw, sparsity=sparsity)
    return Count()


# --- The registry

# block type -> counting function (dim_in, dim, params, out_hw, stride, sparsity); the keys are
# search_spaces.BLOCK_TYPES, and nas.ops.BLOCKS pairs each with its module class.
BLOCK_COUNTS = {
    "convnext": count_convnext,
    "mbconv": count_mbconv,
    "lka": count_lka,
    "pelk": count_pelk,
    "sam": count_sam,
    "msa": count_msa,
    "condconv": count_condconv,
    "dynconv": count_dynconv,
    "ghost": count_ghost,
    "scconv": count_scconv,
    "doconv": count_doconv,
    "resnest": count_resnest,
    "involution": count_involution,
}

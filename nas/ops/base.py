"""Shared pieces of the operator modules: norms and the exact fast paths of depthwise convolutions.

The Count of a module and the per-layer counting rules (`conv_count`, `linear_count`, `norm_count`,
`matmul_count`, in the seed papers' MAC convention) live in :mod:`nas.counting`, next to nothing that
needs torch, so that counting and budgets cost no torch import; they are re-exported here.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..counting import Count, conv_count, linear_count, matmul_count, norm_count
from .layers import LayerNorm2d

__all__ = ["Count", "conv_count", "linear_count", "norm_count", "matmul_count", "make_norm2d", "DepthwiseConv2d",
           "depthwise_conv2d", "dense_convolutions", "fast_paths_enabled", "reach", "fft_depthwise_conv2d", "use_fft",
           "use_channels_last"]


def make_norm2d(kind: str, channels: int) -> nn.Module:
    """A norm over the channels of an NCHW map: 'bn' (BatchNorm2d) or 'ln' (LayerNorm2d, eps 1e-6)."""
    return nn.BatchNorm2d(channels) if kind == "bn" else LayerNorm2d(channels, eps=1e-6)


_CROP_KERNELS = True


class dense_convolutions:  # noqa: N801 - used like a function: `with dense_convolutions():`
    """Within this context depthwise convs run uncropped, so that torch's FLOP counter sees the papers'
    dense K x K cost (the convention of `nas.count`); outside it they take the exact fast path."""

    def __enter__(self) -> None:
        global _CROP_KERNELS
        self._saved, _CROP_KERNELS = _CROP_KERNELS, False

    def __exit__(self, *exc: object) -> None:
        global _CROP_KERNELS
        _CROP_KERNELS = self._saved


def fast_paths_enabled() -> bool:
    """False inside `dense_convolutions()`: operators with a cheaper exact algorithm must then run dense."""
    return _CROP_KERNELS


def reach(kernel: int, dilation: int, size: int) -> int:
    """How many taps on each side of a 'same'-padded kernel can touch a map of `size`: taps at offsets
    of `size` or more only ever read zero padding."""
    half = kernel // 2
    return min(half, (size - 1) // dilation) if _CROP_KERNELS else half


# Measured on a 2-core x86 CPU (benchmarks/large_kernel.py): PyTorch's direct depthwise conv on NCHW
# tensors runs at 1-2 G MAC/s for large kernels; on channels_last tensors (oneDNN) it is 5-17x faster
# in the forward pass, but its backward pass is not; there a zero-padded FFT wins from about 17 taps on
# maps of 14 px and up. So: FFT when training large kernels on large maps, channels_last otherwise.
FFT_MIN_KERNEL = 17
FFT_MIN_SIZE = 14


def use_fft(kernel_h: int, kernel_w: int, height: int, width: int) -> bool:
    """The algorithm rule: FFT for large kernels on maps big enough to amortise the transforms."""
    return _CROP_KERNELS and min(kernel_h, kernel_w) >= FFT_MIN_KERNEL and min(height, width) >= FFT_MIN_SIZE


def use_channels_last(kernel: int, height: int, width: int, training: bool) -> bool:
    """The direct path's layout: oneDNN's channels_last wins for large kernels, and in training for
    any kernel from 5 on maps of 14 x 14 and up; small problems keep their layout (no copy)."""
    return _CROP_KERNELS and (kernel >= 15 or (training and kernel >= 5 and height * width >= 196))


def fft_depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """'Same' depthwise cross-correlation through zero-padded real FFTs (no wrap-around), exact up to
    rounding; autograd differentiates the transforms, so training works too."""
    h, w = x.shape[-2:]
    kh, kw = weight.shape[-2:]
    size = (h + kh - 1, w + kw - 1)
    spectrum = torch.fft.rfft2(x, s=size) * torch.fft.rfft2(weight[:, 0], s=size).conj()
    out = torch.fft.irfft2(spectrum, s=size)
    out = torch.roll(out, shifts=(kh // 2, kw // 2), dims=(-2, -1))[..., :h, :w]
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def rules_measured_for(x: torch.Tensor) -> bool:
    """Whether the algorithm rules (cropping, FFT, layout, PeLK's box sums) hold for x's device. They were
    measured on a CPU (`benchmarks/large_kernel.py`); on CUDA the plain dense conv (cuDNN) runs until
    each rule is measured there."""
    return x.device.type == "cpu"


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     dilation: int = 1) -> torch.Tensor:
    """A 'same'-padded depthwise conv: skips the kernel taps which can only see padding, then runs
    the cropped kernel through an FFT (training, large undilated kernels on large maps) or directly on
    channels_last tensors. On other devices than the CPU, the dense conv (`rules_measured_for`).

    Exact: the skipped taps multiply zeros in the forward pass and get zero gradient in the backward
    pass either way. On small maps (proxies, late stages) this is what makes large kernels affordable.
    """
    k = weight.shape[-1]
    if not rules_measured_for(x):
        pad = (k // 2) * dilation
        return F.conv2d(x, weight, bias, padding=pad, dilation=dilation, groups=x.shape[1])
    ry, rx = reach(k, dilation, x.shape[-2]), reach(k, dilation, x.shape[-1])
    half = k // 2
    if (ry, rx) != (half, half):
        weight = weight[:, :, half - ry:half + ry + 1, half - rx:half + rx + 1]
    training = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if training and dilation == 1 and use_fft(2 * ry + 1, 2 * rx + 1, x.shape[-2], x.shape[-1]):
        return fft_depthwise_conv2d(x, weight, bias)
    if use_channels_last(2 * ry + 1, x.shape[-2], x.shape[-1], training):
        x = x.contiguous(memory_format=torch.channels_last)
        weight = weight.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, weight, bias, padding=(ry * dilation, rx * dilation), dilation=dilation, groups=x.shape[1])


class DepthwiseConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters and state dict) for odd-kernel 'same' depthwise convs, cropped exactly."""

    def __init__(self, channels: int, kernel: int, dilation: int = 1, bias: bool = True) -> None:
        super().__init__(channels, channels, kernel, padding=(kernel // 2) * dilation, dilation=dilation,
                         groups=channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv2d(x, self.weight, self.bias, self.dilation[0])

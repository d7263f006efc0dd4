"""Input-conditioned kernels: CondConv (NeurIPS 2019) and Dynamic Convolution (CVPR 2020).

Both keep a bank of E (K) kernels and, per sample, mix them into one kernel *before* convolving:
CondConv with independent sigmoid routing weights r(x) = sigmoid(GAP(x) R), DynamicConv with a
softmax attention pi(x) = softmax(FC(ReLU(FC(GAP(x)))) / tau) that sums to 1. The mixed kernel is
one matrix product (mix @ bank) and the conv runs once per sample (a grouped conv over the batch).

In the blocks the operator is the spatial mixer as a depthwise k x k conv (the papers apply it to
depthwise convs too: CondConv-EfficientNet, Dynamic MobileNet), without bias (a BatchNorm follows;
DynamicConv's aggregated bias would be cancelled by it).

Counting: the conv at its dense cost once (as a static conv of that shape), plus the kernel
aggregation as matmul MACs (experts x kernel weights, per sample), plus the routing / attention
linear layers. The kernel banks are plain parameters, not nn.Conv2d, so sparsity masks leave them
dense; the routing layers are nn.Linear and are masked.

Temperature annealing (DynamicConv, Sec. 3.2 / 4): training starts at tau = 30 (near-uniform
attention, so all kernels learn) and tau falls linearly to 1 over the first 10 epochs. Proxy training
(`trials.train`) sets it every step, over the first quarter of its short run, with
``set_temperature(model, anneal_temperature(...))``. The temperature is a plain attribute (not a
parameter or buffer): it is training state and is not saved.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..counting import count_condconv, count_dynconv, dynconv_hidden
from .mixer import MixerBlock

__all__ = [
    "CondConv2d", "DynamicConv2d", "CondConvBlock", "DynamicConvBlock", "count_condconv", "count_dynconv",
    "anneal_temperature", "set_temperature", "dynconv_hidden",
]


def _kernel_bank(n: int, cout: int, cin_per_group: int, kernel: int) -> nn.Parameter:
    bank = torch.empty(n, cout, cin_per_group, kernel, kernel)
    for i in range(n):  # each kernel initialised like an nn.Conv2d weight
        nn.init.kaiming_uniform_(bank[i], a=math.sqrt(5))
    return nn.Parameter(bank)


def mixed_kernel_conv(x: torch.Tensor, mix: torch.Tensor, bank: torch.Tensor, groups: int) -> torch.Tensor:
    """Convolve each sample of `x` with its own kernel sum_e mix[b, e] * bank[e] ("same" padding).

    The aggregation is one (B x E) @ (E x weights) product; the convs run as one grouped conv over the
    batch, so each sample pays one static conv.
    """
    b, c, h, w = x.shape
    n, cout = bank.shape[:2]
    kernels = (mix @ bank.reshape(n, -1)).reshape(b * cout, *bank.shape[2:])
    y = F.conv2d(x.reshape(1, b * c, h, w), kernels, padding=bank.shape[-1] // 2, groups=b * groups)
    return y.reshape(b, cout, h, w)


class CondConv2d(nn.Module):
    """A conditionally parameterised conv: per-sample kernel sum_e sigmoid(GAP(x) R)_e * W_e."""

    def __init__(self, cin: int, cout: int, kernel: int, experts: int, groups: int = 1) -> None:
        super().__init__()
        self.groups = groups
        self.weight = _kernel_bank(experts, cout, cin // groups, kernel)
        # CondConv's official (TF EfficientNet) init: every expert fan-out normal, groups counted
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 * groups / (kernel * kernel * cout)))
        self.routing = nn.Linear(cin, experts)

    def routing_weights(self, x: torch.Tensor) -> torch.Tensor:
        """(B, experts) weights in (0, 1), independent per expert (sigmoid, not softmax)."""
        return torch.sigmoid(self.routing(x.mean((2, 3))))

    def forward(self, x: torch.Tensor, routing: torch.Tensor | None = None) -> torch.Tensor:
        return mixed_kernel_conv(x, self.routing_weights(x) if routing is None else routing, self.weight, self.groups)


class DynamicConv2d(nn.Module):
    """Dynamic convolution: K kernels aggregated by a softmax attention with temperature."""

    def __init__(self, cin: int, cout: int, kernel: int, num_kernels: int, groups: int = 1,
                 temperature: float = 30.0) -> None:
        super().__init__()
        self.groups = groups
        self.temperature = float(temperature)
        self.weight = _kernel_bank(num_kernels, cout, cin // groups, kernel)
        hidden = dynconv_hidden(cin)
        self.fc1 = nn.Linear(cin, hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, num_kernels)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K) kernel attention: softmax(z / temperature), each row sums to 1."""
        z = self.fc2(self.act(self.fc1(x.mean((2, 3)))))
        return torch.softmax(z / self.temperature, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mixed_kernel_conv(x, self.attention(x), self.weight, self.groups)


def anneal_temperature(epoch: float, start: float = 30.0, end: float = 1.0, epochs: float = 10.0) -> float:
    """The paper's schedule: tau falls linearly from `start` to `end` over the first `epochs` epochs."""
    return end if epoch >= epochs else start + (end - start) * epoch / epochs


def set_temperature(model: nn.Module, temperature: float) -> None:
    """Set the attention temperature of every DynamicConv2d in `model`."""
    for m in model.modules():
        if isinstance(m, DynamicConv2d):
            m.temperature = float(temperature)


class CondConvBlock(MixerBlock):
    """A depthwise CondConv k x k (E experts) as the spatial mixer of the conv-variant block."""

    def __init__(self, dim_in: int, dim: int, params: dict[str, Any], stride: int = 1,
                 drop_path: float = 0.0, feat_size: tuple[int, int] = (7, 7)) -> None:
        assert dim_in == dim and stride == 1, "CondConv blocks keep width and resolution"
        super().__init__(CondConv2d(dim, dim, params["kernel"], params["experts"], groups=dim), dim, params,
                         drop_path)


class DynamicConvBlock(MixerBlock):
    """A depthwise dynamic conv k x k (K kernels) as the spatial mixer; `temperature` is settable."""

    def __init__(self, dim_in: int, dim: int, params: dict[str, Any], stride: int = 1,
                 drop_path: float = 0.0, feat_size: tuple[int, int] = (7, 7)) -> None:
        assert dim_in == dim and stride == 1, "DynamicConv blocks keep width and resolution"
        super().__init__(DynamicConv2d(dim, dim, params["kernel"], params["num_kernels"], groups=dim,
                                       temperature=params["temperature"]), dim, params, drop_path)

    @property
    def temperature(self) -> float:
        return self.mixer.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.mixer.temperature = float(value)

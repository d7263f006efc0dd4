"""Weight initialisation per family, as each family's official code does it.

Every block initialises its own parameters at the end of its constructor (`init_weights`), as timm's
model files do; the model initialises only what lies between the blocks (stem, downsampling, head,
see `nas.model`). Built before any sparsity mask is applied, so the masks see initialised weights.

- `van` (VAN, SMT official code): Conv2d normal(0, sqrt(2 / fan_out)) with fan_out = k_h k_w out / groups,
  Linear trunc-normal .02, biases 0.
- `convnext` (ConvNeXt, SLaK, on which PeLK builds): Conv2d and Linear trunc-normal .02, biases 0.
- `efficientnet` (timm's TF-EfficientNet init: CoAtNet's MBConv in timm's maxxvit, CondConv, MobileNet-family
  blocks): Conv2d as `van`, Linear uniform +-1 / sqrt(fan_in + fan_out), biases 0.
- `vit_eff` (timm maxxvit's transformer blocks, CoAtNet): Conv2d and Linear xavier-uniform, biases 0 (MLP
  biases normal 1e-6).

Norm layers keep PyTorch's weight 1, bias 0 everywhere (what every family sets). Parameters held outside
nn.Conv2d / nn.Linear (kernel banks, shared peripheral kernels, DO-Conv's W and D, position tables) are
initialised by their own modules; `init_module` leaves them alone.
"""
from __future__ import annotations

import math

import torch.nn as nn

from .layers import trunc_normal_

__all__ = ["conv_fan_out", "fan_out_normal_", "init_module", "SCHEMES"]

SCHEMES = ("van", "convnext", "efficientnet", "vit_eff")


def conv_fan_out(conv: nn.Conv2d) -> int:
    """k_h * k_w * out_channels / groups: the fan-out of one input channel (VAN, SMT, TF-EfficientNet)."""
    return conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels // conv.groups


def fan_out_normal_(conv: nn.Conv2d) -> None:
    """He-normal on the fan-out, groups counted (depthwise convs get sqrt(2 / k^2), not sqrt(2 / (C k^2)))."""
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / conv_fan_out(conv)))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _trunc_normal(layer: nn.Conv2d | nn.Linear) -> None:
    trunc_normal_(layer.weight, std=0.02)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _init_one(module: nn.Module, name: str, scheme: str) -> None:
    if isinstance(module, nn.Conv2d):
        if scheme in ("van", "efficientnet"):
            fan_out_normal_(module)
        elif scheme == "convnext":
            _trunc_normal(module)
        else:  # vit_eff
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        if scheme in ("van", "convnext"):
            _trunc_normal(module)
        elif scheme == "efficientnet":
            bound = 1.0 / math.sqrt(module.in_features + module.out_features)
            nn.init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        else:  # vit_eff: timm's _init_transformer (ViT's init; tiny noise on MLP biases)
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                if "mlp" in name:
                    nn.init.normal_(module.bias, std=1e-6)
                else:
                    nn.init.zeros_(module.bias)


def init_module(module: nn.Module, scheme: str) -> None:
    """Initialise every nn.Conv2d and nn.Linear inside `module` (itself included) by `scheme`."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    for name, sub in module.named_modules():
        _init_one(sub, name, scheme)

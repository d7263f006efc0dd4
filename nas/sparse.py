"""Fixed sparsity masks (SLaK / PeLK train 40%-sparse conv and linear weights).

Every conv, linear and peripheral-conv weight gets a fixed random mask zeroing exactly
``int(numel * sparsity)`` entries, through `torch.nn.utils.parametrize`, so gradients and the
optimiser see the masked weight. SLaK's prune-and-regrow schedule is not reproduced.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from .ops.pelk import PeripheralConv

__all__ = ["FixedMask", "apply_sparsity", "sparse_weights"]


class FixedMask(nn.Module):
    """A parametrization multiplying a weight by a constant 0/1 mask."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def sparse_weights(model: nn.Module) -> list[nn.Module]:
    """The modules whose `weight` a sparsity mask applies to, in a fixed order."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, PeripheralConv))]


def apply_sparsity(model: nn.Module, sparsity: float, seed: int = 0) -> nn.Module:
    """Mask `sparsity` of every conv/linear weight of `model` (in place); deterministic in `seed`."""
    if sparsity <= 0:
        return model
    generator = torch.Generator().manual_seed(seed)
    for module in sparse_weights(model):
        numel = module.weight.numel()
        zeros = int(numel * sparsity)
        mask = torch.ones(numel, device="cpu")
        mask[torch.randperm(numel, generator=generator, device="cpu")[:zeros]] = 0
        mask = mask.view(module.weight.shape).to(module.weight.device)
        parametrize.register_parametrization(module, "weight", FixedMask(mask))
    return model

"""The generic layers the operators share: stochastic depth, the transformer MLP, a channel LayerNorm
for NCHW maps, truncated-normal init and the fused-attention switch.

Written here rather than imported from `timm.layers`: importing timm loads torchvision and the model
hub's client, about 200 MB in every Ray trial worker (`benchmarks/search_memory.py`), for a handful of
small layers. Each one computes what its timm namesake computes, with the same parameter names, so
checkpoints and timm's loaders see no difference (tests/test_ops.py compares them with timm's).
"""
from __future__ import annotations

import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DropPath", "Mlp", "LayerNorm2d", "trunc_normal_", "use_fused_attn"]


class DropPath(nn.Module):
    """Stochastic depth: in training, zeroes a residual branch for a random `drop_prob` share of the
    samples and scales the kept ones by 1 / (1 - drop_prob)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        if keep > 0.0:
            mask.div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class Mlp(nn.Sequential):
    """Linear, activation, linear over the last dimension (the transformer's feed-forward layer); named
    fc1 / act / drop1 / norm / fc2 / drop2 like timm's, so that state dicts match."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0) -> None:
        hidden = hidden_features or in_features
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden, out_features or in_features)
        self.drop2 = nn.Dropout(drop)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def trunc_normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                  b: float = 2.0) -> torch.Tensor:
    """Fill `tensor` with Normal(mean, std) draws truncated to [a, b] (bounds in value units), by
    inverse-CDF sampling: the draw of timm's and the papers' code, which torch's own function no longer
    reproduces."""
    def normal_cdf(v: float) -> float:
        return (1.0 + math.erf(v / math.sqrt(2.0))) / 2.0

    with torch.no_grad():
        low, high = normal_cdf((a - mean) / std), normal_cdf((b - mean) / std)
        tensor.uniform_(2 * low - 1, 2 * high - 1).erfinv_()
        return tensor.mul_(std * math.sqrt(2.0)).add_(mean).clamp_(min=a, max=b)


def use_fused_attn() -> bool:
    """Whether attention runs through `F.scaled_dot_product_attention`: timm's switch where timm is loaded
    (FLOP counters and users turn it off with `timm.layers.set_fused_attn(False)`), otherwise on."""
    timm_layers = sys.modules.get("timm.layers")
    return timm_layers.use_fused_attn() if timm_layers is not None else True

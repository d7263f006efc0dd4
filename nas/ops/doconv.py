"""DO-Conv: depthwise over-parameterized convolution (Cao et al., IEEE TIP 2022).

A conventional kernel W (C_out x C_in/g x D_mul) is composed with a depthwise kernel D
(C_in x k*k x D_mul, D_mul >= k*k): W'[o, j, mn] = sum_s D[c(o, j), mn, s] * W[o, j, s], where
c(o, j) is the input channel j of o's group. D is trained as D_identity + D_learned with D_learned
initialised to zero (the identity tiles k*k columns over D_mul; leftover columns are zero), so at
initialisation DO-Conv is a conv with kernel W summed over its tiles. In training the kernel is
composed on every call ("kernel composition", equal to the paper's feature composition); `eval()`
folds (caches the composed kernel; `fold()` does it explicitly, loading a state dict drops the cache
and the next eval forward folds again) and the layer is then a single plain conv. Change W or D in
eval mode and call `fold()` again.

In the block the operator is the spatial mixer as a depthwise k x k DO-Conv (the paper's DO-DConv
form), without bias (a BatchNorm follows).

Counting: FLOPs of the folded (inference) conv only; parameters are the training-time ones, W and D
(the identity part is a buffer, the folded kernel a non-persistent buffer, so neither is a
parameter). W and D are plain parameters, never sparsity-masked. Cross-check the FLOPs in eval mode:
in training the composition adds C_out * C_in/g * k*k * D_mul MACs per call.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..counting import count_doconv
from .mixer import MixerBlock

__all__ = ["DOConv2d", "DOConvBlock", "count_doconv"]


class DOConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, d_mul: int | None = None, groups: int = 1,
                 bias: bool = False) -> None:
        super().__init__()
        mn = kernel * kernel
        d_mul = mn if d_mul is None else d_mul
        assert d_mul >= mn, "DO-Conv needs D_mul >= k*k"
        self.cin, self.cout, self.kernel, self.groups, self.d_mul = cin, cout, kernel, groups, d_mul
        self.W = nn.Parameter(torch.empty(cout, cin // groups, d_mul))
        nn.init.kaiming_uniform_(self.W, a=math.sqrt(5))
        self.D = nn.Parameter(torch.zeros(cin, mn, d_mul))
        eye = torch.eye(mn).repeat(1, d_mul // mn)
        eye = torch.cat([eye, torch.zeros(mn, d_mul % mn)], dim=1)
        self.register_buffer("D_identity", eye.expand(cin, mn, d_mul).clone())
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.register_buffer("folded_weight", None, persistent=False)

    def composed_kernel(self) -> torch.Tensor:
        """W' = D^T o W as a (C_out, C_in/g, k, k) conv kernel."""
        g, k = self.groups, self.kernel
        w = self.W.reshape(g, self.cout // g, self.cin // g, self.d_mul)
        d = (self.D + self.D_identity).reshape(g, self.cin // g, k * k, self.d_mul)
        return torch.einsum("gojs,gjms->gojm", w, d).reshape(self.cout, self.cin // g, k, k)

    @torch.no_grad()
    def fold(self) -> torch.Tensor:
        """Cache the composed kernel; until train() it is used as a plain conv kernel."""
        self.folded_weight = self.composed_kernel().detach().clone()
        return self.folded_weight

    def train(self, mode: bool = True) -> DOConv2d:
        super().train(mode)
        if mode:
            self.folded_weight = None
        else:
            self.fold()
        return self

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self.folded_weight = None  # new W and D: fold again
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            weight = self.composed_kernel()
        else:
            weight = self.folded_weight if self.folded_weight is not None else self.fold()
        return F.conv2d(x, weight, self.bias, padding=self.kernel // 2, groups=self.groups)


class DOConvBlock(MixerBlock):
    """A depthwise DO-Conv k x k (depth multiplier D_mul) as the spatial mixer of the conv-variant block."""

    def __init__(self, dim_in: int, dim: int, params: dict[str, Any], stride: int = 1,
                 drop_path: float = 0.0, feat_size: tuple[int, int] = (7, 7)) -> None:
        assert dim_in == dim and stride == 1, "DO-Conv blocks keep width and resolution"
        super().__init__(DOConv2d(dim, dim, params["kernel"], params["d_mul"], groups=dim), dim, params, drop_path)

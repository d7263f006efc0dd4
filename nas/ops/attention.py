"""Multi-head self-attention blocks over the whole feature map.

One block covers both papers that use it: CoAtNet's transformer block (relative position bias, plain
MLP, pooling downsample in a stage's first block) and SMT's MSA block (a depthwise 3x3 conv on the
values added to the attention output, an MLP with a depthwise conv).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..counting import count_msa
from .conv import layer_scale, pool_shortcut
from .init import init_module
from .layers import DropPath, Mlp, trunc_normal_, use_fused_attn
from .smt import ConvMlp

__all__ = ["RelPosBias", "MultiHeadSelfAttention", "MsaBlock", "count_msa"]


class RelPosBias(nn.Module):
    """A learned bias per head and 2-D relative offset (CoAtNet / Swin), made for `feat_size`.

    At another feature size the table is resized bicubically, so the model runs at any input size.
    """

    def __init__(self, feat_size: tuple[int, int], heads: int) -> None:
        super().__init__()
        self.feat_size = tuple(feat_size)
        h, w = self.feat_size
        self.table = nn.Parameter(torch.zeros(heads, 2 * h - 1, 2 * w - 1))
        trunc_normal_(self.table, std=0.02)

    @staticmethod
    def _index(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        return ys[:, None] - ys[None, :] + h - 1, xs[:, None] - xs[None, :] + w - 1

    def forward(self, h: int, w: int) -> torch.Tensor:
        """The (heads, h*w, h*w) bias for an h x w map."""
        table = self.table
        if (h, w) != self.feat_size:
            table = F.interpolate(table[None], size=(2 * h - 1, 2 * w - 1), mode="bicubic", align_corners=True)[0]
        dy, dx = self._index(h, w, table.device)
        return table[:, dy, dx]


class MultiHeadSelfAttention(nn.Module):
    """Global MHSA on NHWC tokens via F.scaled_dot_product_attention (explicit when fused attention
    is off, e.g. for FLOP counting with `timm.layers.set_fused_attn(False)`)."""

    def __init__(self, dim_in: int, dim: int, heads: int, qkv_bias: bool = True, rel_pos: bool = False,
                 v_conv: bool = False, feat_size: tuple[int, int] = (7, 7)) -> None:
        super().__init__()
        self.heads = heads
        self.fused_attn = use_fused_attn()
        self.qkv = nn.Linear(dim_in, 3 * dim, bias=qkv_bias)
        self.rel_pos = RelPosBias(feat_size, heads) if rel_pos else None
        self.v_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if v_conv else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, H * W, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.rel_pos(H, W).to(q.dtype) if self.rel_pos is not None else None
        if self.fused_attn:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
            if bias is not None:
                attn = attn + bias
            out = attn.softmax(dim=-1) @ v
        out = out.transpose(1, 2).reshape(B, H, W, -1)
        if self.v_conv is not None:
            v_map = v.transpose(1, 2).reshape(B, H, W, -1).permute(0, 3, 1, 2)
            out = out + self.v_conv(v_map).permute(0, 2, 3, 1)
        return self.proj(out)


class MsaBlock(nn.Module):
    """Pre-norm transformer block on NCHW maps; with stride 2 it pools (CoAtNet's downsampling)."""

    def __init__(self, dim_in: int, dim: int, params: dict[str, Any], stride: int = 1,
                 drop_path: float = 0.0, feat_size: tuple[int, int] = (7, 7)) -> None:
        super().__init__()
        self.shortcut = pool_shortcut(dim_in, dim, stride)
        self.norm1 = nn.LayerNorm(dim_in, eps=1e-6)
        self.down = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()
        self.attn = MultiHeadSelfAttention(dim_in, dim, params["heads"], params["qkv_bias"],
                                           params["rel_pos"], params["v_conv"], feat_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * params["mlp_ratio"])
        self.mlp = ConvMlp(dim, hidden) if params["mlp"] == "conv" else Mlp(dim, hidden, act_layer=nn.GELU)
        self.ls1 = layer_scale(dim, params["layer_scale"])
        self.ls2 = layer_scale(dim, params["layer_scale"])
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        # with relative position bias: CoAtNet, as timm's maxxvit inits it; otherwise SMT's MSA block
        self.init_scheme = "vit_eff" if params["rel_pos"] else "van"
        self.init_weights()

    def init_weights(self) -> None:
        """CoAtNet (timm maxxvit's transformer init: xavier-uniform) or SMT (fan-out normal convs,
        trunc-normal .02 linears); the relative position table keeps its trunc-normal .02."""
        init_module(self, self.init_scheme)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        y = self.down(self.norm1(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        x = shortcut + self.drop_path(self.ls1(self.attn(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)))

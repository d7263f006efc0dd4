"""Build a timm-style backbone from an architecture spec."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import LayerNorm2d, trunc_normal_
from timm.models._features import feature_take_indices

from search_spaces.spec import ArchSpec

from .ops import BLOCKS
from .ops.pelk import make_pos_embed, pelk_conv_channels
from .ops.stems import build_downsample, build_stem
from .plan import StagePlan, plan_stages
from .sparse import apply_sparsity

__all__ = ["HybridNet", "HybridStage", "ClassifierHead", "build_model"]


class HybridStage(nn.Module):
    """Downsampling, blocks, and an optional closing LayerNorm; owns the PeLK positional embedding."""

    def __init__(self, spec: ArchSpec, plan: StagePlan, drop_path: list[float]) -> None:
        super().__init__()
        stage = spec.stages[plan.index]
        self.downsample = build_downsample(stage.downsample, plan.dim_in, plan.dim, stage.down_norm)
        self.blocks = nn.ModuleList(
            BLOCKS[b.spec.type][0](b.dim_in, b.dim, b.spec.params, stride=b.stride, drop_path=dp,
                                   feat_size=plan.out_hw)
            for b, dp in zip(plan.blocks, drop_path))
        pelk = next((b for b in stage.blocks if b.type == "pelk"), None)
        self.pos_embed = make_pos_embed(pelk_conv_channels(plan.dim, pelk.params), pelk.kernel) if pelk else None
        self.norm = LayerNorm2d(plan.dim, eps=1e-6) if stage.norm_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            x = block(x, self.pos_embed) if getattr(block, "uses_pos_embed", False) else block(x)
        return self.norm(x)


class ClassifierHead(nn.Module):
    """Global average pool, optional LayerNorm, optional pre-logits Linear + tanh, dropout, linear."""

    def __init__(self, dim: int, num_classes: int, norm: bool, hidden: int | None, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6) if norm else nn.Identity()
        self.pre_logits = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh()) if hidden else nn.Identity()
        self.num_features = hidden or dim
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.pre_logits(self.norm(x.mean((2, 3)))))
        return x if pre_logits else self.fc(x)


class HybridNet(nn.Module):
    """A four-stage hybrid backbone with timm's classifier interface.

    `forward_features` returns the last (stride-32) map, `forward_head` pools and classifies,
    `feature_info` describes the four stage outputs. Runs at any input size divisible by 32.
    """

    def __init__(self, spec: ArchSpec | dict[str, Any], num_classes: int = 1000, in_chans: int = 3,
                 img_size: int = 224, drop_rate: float = 0.0, drop_path_rate: float | None = None) -> None:
        super().__init__()
        spec = ArchSpec.from_dict(spec) if isinstance(spec, dict) else spec.validate()
        if drop_path_rate is not None:
            spec = spec.replace(drop_path_rate=drop_path_rate)
        self.spec = spec
        self.num_classes = num_classes
        plans = plan_stages(spec, img_size)
        self.stem = build_stem(spec.stem.type, in_chans, spec.stem_width(), spec.stem.kernel, spec.stem.norm)
        total = sum(len(p.blocks) for p in plans)
        rates = [spec.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages, start = [], 0
        for plan in plans:
            stages.append(HybridStage(spec, plan, rates[start:start + len(plan.blocks)]))
            start += len(plan.blocks)
        self.stages = nn.Sequential(*stages)
        self.num_features = plans[-1].dim
        self.feature_info = [dict(num_chs=p.dim, reduction=p.reduction, module=f"stages.{p.index}") for p in plans]
        self.head = ClassifierHead(self.num_features, num_classes, spec.head.norm, spec.head.hidden, drop_rate)
        self.head_hidden_size = self.head.num_features
        self.pretrained_cfg = dict(
            input_size=(in_chans, img_size, img_size), mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
            num_classes=num_classes, interpolation="bicubic", crop_pct=0.9, first_conv="stem.0",
            classifier="head.fc", architecture=spec.name or "hybridnet")
        self.default_cfg = self.pretrained_cfg
        self.apply(_init_weights)
        apply_sparsity(self, spec.sparsity)

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Any = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes)

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's intermediate-feature API: the outputs of the stages in `indices` (last n if an int)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r} is not supported; use 'NCHW'")
        take, max_index = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        stages = self.stages[:max_index + 1] if stop_early else self.stages
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last wanted one (and the head), as timm's models do."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if prune_head:
            self.reset_classifier(0)
        return take

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_model(spec: ArchSpec | dict[str, Any] | str, num_classes: int = 1000, **kwargs: Any) -> HybridNet:
    """Build the model a spec describes (an ArchSpec, its dict, or its JSON)."""
    if isinstance(spec, str):
        spec = ArchSpec.from_json(spec)
    elif isinstance(spec, dict):
        spec = ArchSpec.from_dict(spec)
    return HybridNet(spec, num_classes=num_classes, **kwargs)

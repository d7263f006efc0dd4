"""Build a timm-style backbone from an architecture spec.

Besides the classifier and feature interfaces, `HybridNet` has the parts timm's training code looks
for: `no_weight_decay()` (position tables), `group_matcher()` (layer-wise lr decay, parameter groups)
and `set_grad_checkpointing()`. Each block initialises its own weights as its family's official code
does (`nas.ops.init`); the model initialises the stem, the downsampling layers and the head the same
way, by the family their kind comes from.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from search_spaces.spec import ArchSpec

from .ops import BLOCKS
from .ops.attention import RelPosBias
from .ops.init import init_module
from .ops.layers import LayerNorm2d
from .ops.pelk import make_pos_embed, pelk_conv_channels
from .ops.stems import build_downsample, build_stem
from .plan import StagePlan, plan_stages
from .sparse import apply_sparsity

__all__ = ["HybridNet", "HybridStage", "ClassifierHead", "build_model"]

# The family each stem / downsampling kind comes from decides its init (nas.ops.init): VAN's overlapping
# convs and SMT's conv stem fan-out normal, ConvNeXt / PeLK patchify convs trunc-normal .02, CoAtNet's
# deep stem as timm's maxxvit (fan-out normal).
STEM_INIT = {"overlap": "van", "patch": "convnext", "conv2": "van", "deep": "efficientnet"}
DOWNSAMPLE_INIT = {"overlap": "van", "patch": "convnext"}

# ImageNet's channel statistics, which timm's pretrained configs name (timm.data.IMAGENET_DEFAULT_*)
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


def feature_take_indices(num_features: int, indices: int | list[int] | None) -> tuple[list[int], int]:
    """timm's convention for which stages to return: None all, an int the last n, a list those indices
    (negative from the end); with the largest one."""
    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"last-n ({indices}) is out of range (1 to {num_features})")
        take = list(range(num_features - indices, num_features))
    else:
        take = [num_features + i if i < 0 else i for i in indices]
        if any(not 0 <= i < num_features for i in take):
            raise ValueError(f"feature indices {list(indices)} out of range (0 to {num_features - 1})")
    return take, max(take)


@contextlib.contextmanager
def _keep_norm_stats(module: nn.Module) -> Iterator[None]:
    """Put BatchNorm running statistics back after a checkpointed block is recomputed in the backward pass:
    the recomputation runs the block in training mode again and would update them twice a step."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.training and m.track_running_stats and m.running_mean is not None]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


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
        self.grad_checkpointing = False
        if stage.downsample in DOWNSAMPLE_INIT:
            init_module(self.downsample, DOWNSAMPLE_INIT[stage.downsample])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        checkpointing = self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting()
        for block in self.blocks:
            args = (x, self.pos_embed) if getattr(block, "uses_pos_embed", False) else (x,)
            if checkpointing:  # keep only the block's input; recompute its activations in the backward pass
                x = checkpoint(block, *args, use_reentrant=False,
                               context_fn=lambda b=block: (contextlib.nullcontext(), _keep_norm_stats(b)))
            else:
                x = block(*args)
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
        init_module(self.stem, STEM_INIT[spec.stem.type])
        init_module(self.head, "convnext")  # trunc-normal .02 linears: VAN, SMT, ConvNeXt and PeLK alike
        apply_sparsity(self, spec.sparsity)  # after init: the masks apply to initialised weights

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters that must not be decayed: the relative position bias tables (CoAtNet) and PeLK's
        kernel-wise positional embeddings. timm's `create_optimizer_v2` reads this and also leaves every
        1-d parameter (biases, norms, layer scales) undecayed."""
        tables = {id(m.table) for m in self.modules() if isinstance(m, RelPosBias)}
        tables |= {id(s.pos_embed) for s in self.stages if getattr(s, "pos_embed", None) is not None}
        return {name for name, p in self.named_parameters() if id(p) in tables}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Regexes grouping parameters for timm (layer-wise lr decay): the stem, then per stage (coarse) or
        per block, a stage's downsampling and positional embedding with its first block, its closing norm
        with its last (timm's MATCH_PREV_GROUP); the head, unmatched, comes last."""
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.(?:downsample|pos_embed)", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^stages\.(\d+)\.norm", (99999,)),
            ])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (less memory,
        about one more forward pass of compute); outputs and gradients are unchanged."""
        for stage in self.stages:
            stage.grad_checkpointing = enable

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


def build_model(spec: ArchSpec | dict[str, Any] | str, num_classes: int = 1000, **kwargs: Any) -> HybridNet:
    """Build the model a spec describes (an ArchSpec, its dict, or its JSON)."""
    if isinstance(spec, str):
        spec = ArchSpec.from_json(spec)
    elif isinstance(spec, dict):
        spec = ArchSpec.from_dict(spec)
    return HybridNet(spec, num_classes=num_classes, **kwargs)

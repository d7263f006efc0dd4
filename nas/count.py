"""Parameters and FLOPs of a spec without building or running the model (microseconds to milliseconds).

FLOPs are multiply-accumulates in the seed papers' convention; the counting rules live in
`nas.counting`, next to nothing that needs torch, so that counting (and `nas.budget`) costs no torch
or timm import. `torch.utils.flop_counter` reports exactly twice these for unfused attention (checked
by the tests).
"""
from __future__ import annotations

from dataclasses import dataclass

from search_spaces.spec import ArchSpec

from .counting import BLOCK_COUNTS, Count, count_downsample, count_stem, linear_count, norm_count, pelk_conv_channels
from .plan import plan_stages

__all__ = ["ModelCount", "count"]


@dataclass(frozen=True)
class ModelCount:
    """Dense and nonzero (after the fixed sparsity masks) parameters and MACs, with per-stage FLOPs."""

    params: int
    flops: int
    nonzero_params: int
    nonzero_flops: int
    stage_flops: tuple[int, ...]

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def count(spec: ArchSpec, img_size: int = 224, num_classes: int = 1000, in_chans: int = 3) -> ModelCount:
    """Count `spec` as `nas.build_model(spec, num_classes)` would build it for `img_size` inputs."""
    spec.validate()
    s = spec.sparsity
    total = count_stem(spec.stem.type, in_chans, spec.stem_width(), spec.stem.kernel, spec.stem.norm,
                       (img_size, img_size), s)
    stage_flops = []
    for plan in plan_stages(spec, img_size):
        stage = spec.stages[plan.index]
        part = count_downsample(stage.downsample, plan.dim_in, plan.dim, plan.out_hw, s)
        for b in plan.blocks:
            part += BLOCK_COUNTS[b.spec.type](b.dim_in, b.dim, b.spec.params, plan.out_hw, b.stride, s)
        pelk = next((b for b in stage.blocks if b.type == "pelk"), None)
        if pelk is not None:
            embed = pelk_conv_channels(plan.dim, pelk.params) * pelk.kernel ** 2
            part += Count(embed, 0, embed, 0)
        if stage.norm_out:
            part += norm_count(plan.dim)
        stage_flops.append(part.flops)
        total += part
    dim = spec.widths()[-1]
    if spec.head.norm:
        total += norm_count(dim)
    if spec.head.hidden:
        total += linear_count(dim, spec.head.hidden, 1, sparsity=s)
        dim = spec.head.hidden
    if num_classes > 0:
        total += linear_count(dim, num_classes, 1, sparsity=s)
    return ModelCount(total.params, total.flops, total.nonzero_params, round(total.nonzero_flops), tuple(stage_flops))

"""The shapes an architecture spec implies, shared by the model builder and the counter."""
from __future__ import annotations

from dataclasses import dataclass

from search_spaces.spec import ArchSpec, BlockSpec

__all__ = ["BlockPlan", "StagePlan", "plan_stages"]


@dataclass(frozen=True)
class BlockPlan:
    spec: BlockSpec
    dim_in: int
    dim: int
    stride: int


@dataclass(frozen=True)
class StagePlan:
    index: int
    dim_in: int  # width entering the stage (the stem's or the previous stage's)
    dim: int
    reduction: int  # stride of the stage's output relative to the image
    out_hw: tuple[int, int]
    blocks: tuple[BlockPlan, ...]


def plan_stages(spec: ArchSpec, img_size: int | tuple[int, int] = 224) -> list[StagePlan]:
    """Per stage: widths, output size at `img_size`, and each block's input width and stride."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    widths = spec.widths()
    dim_in, reduction = spec.stem_width(), spec.stem.stride
    plans = []
    for i, stage in enumerate(spec.stages):
        dim = widths[i]
        reduction *= stage.stride
        in_block = stage.downsample == "block"
        blocks = tuple(
            BlockPlan(stage.block(j), dim_in if (j == 0 and in_block) else dim, dim,
                      stage.stride if (j == 0 and in_block) else 1)
            for j in range(stage.depth))
        plans.append(StagePlan(i, dim_in, dim, reduction, (h // reduction, w // reduction), blocks))
        dim_in = dim
    return plans

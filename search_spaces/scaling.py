"""Smaller versions of a spec: narrower and shallower, still valid (heads re-fitted to the widths)."""
from __future__ import annotations

from dataclasses import replace

from .space import fit_heads
from .spec import ArchSpec, BlockSpec, StageSpec

__all__ = ["scale_spec"]


def _round(width: int, factor: float, multiple: int) -> int:
    return max(multiple, int(round(width * factor / multiple)) * multiple)


def _refit(block: BlockSpec, old_width: int, new_width: int) -> BlockSpec:
    """Keep SAM's head count and MSA's head dimension where the new width allows."""
    if block.type == "sam":
        return BlockSpec("sam", {**block.params, "heads": fit_heads(new_width, block.heads)})
    if block.type == "msa":
        head_dim = max(1, old_width // block.heads)
        return BlockSpec("msa", {**block.params, "heads": fit_heads(new_width, max(1, new_width // head_dim))})
    return block


def scale_spec(spec: ArchSpec, width: float = 1.0, depths: tuple[int, ...] | None = None,
               max_depth: int | None = None, multiple: int = 32) -> ArchSpec:
    """Scale stage (and deep-stem) widths by `width`, rounded to `multiple`; set or cap the depths."""
    stages = []
    for i, stage in enumerate(spec.stages):
        new_width = _round(stage.width, width, multiple) if width != 1.0 else stage.width
        old_eff, new_eff = int(stage.width * spec.width_mult), int(new_width * spec.width_mult)
        depth = depths[i] if depths is not None else stage.depth
        if max_depth is not None:
            depth = min(depth, max_depth)
        blocks = tuple(_refit(b, old_eff, new_eff) for b in stage.blocks)
        stages.append(StageSpec(depth=max(1, depth), width=new_width, blocks=blocks, downsample=stage.downsample,
                                down_norm=stage.down_norm, norm_out=stage.norm_out))
    stem = spec.stem
    if stem.width is not None and width != 1.0:
        stem = replace(stem, width=_round(stem.width, width, multiple))
    head = spec.head
    if head.hidden is not None:
        head = replace(head, hidden=int(stages[-1].width * spec.width_mult))
    return spec.replace(stem=stem, stages=tuple(stages), head=head).validate()

"""Smaller versions of a spec, still valid points of the space: narrower and shallower (heads re-fitted to
the widths), or lighter (smaller MLPs, no pre-logits layer, no SLaK width multiplier)."""
from __future__ import annotations

from dataclasses import replace

from .space import fit_heads
from .spec import BLOCK_DEFAULTS, ArchSpec, BlockSpec, StageSpec

__all__ = ["scale_spec", "mlp_ratio", "halved_mlp_ratios", "without_pre_logits", "without_width_mult"]


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


def _ratio_key(block: BlockSpec) -> str:
    """Where a block keeps its MLP ratio: MBConv's expand_ratio (SAM's expand_ratio is something else)."""
    return "expand_ratio" if block.type == "mbconv" else "mlp_ratio"


def mlp_ratio(block: BlockSpec) -> float:
    """The block's MLP or expansion ratio, its type's default where the spec leaves it out."""
    key = _ratio_key(block)
    return float(block.params.get(key, BLOCK_DEFAULTS[block.type][key]))


def halved_mlp_ratios(spec: ArchSpec, floor: float = 2.0) -> ArchSpec:
    """Every block's MLP / expansion ratio halved, but not below `floor` (the space's smallest)."""
    def halve(block: BlockSpec) -> BlockSpec:
        return BlockSpec(block.type, {**block.params, _ratio_key(block): max(floor, mlp_ratio(block) / 2)})

    stages = tuple(replace(s, blocks=tuple(halve(b) for b in s.blocks)) for s in spec.stages)
    return spec.replace(stages=stages).validate()


def without_pre_logits(spec: ArchSpec) -> ArchSpec:
    """The spec without its Linear + tanh pre-logits layer."""
    return spec.replace(head=replace(spec.head, hidden=None)).validate()


def without_width_mult(spec: ArchSpec) -> ArchSpec:
    """SLaK's x1.3 width multiplier dropped (x1.0), head counts re-fitted to the narrower widths."""
    if spec.width_mult == 1.0:
        return spec
    stages = tuple(replace(s, blocks=tuple(_refit(b, int(s.width * spec.width_mult), s.width) for b in s.blocks))
                   for s in spec.stages)
    head = spec.head if spec.head.hidden is None else replace(spec.head, hidden=spec.stages[-1].width)
    return spec.replace(stages=stages, head=head, width_mult=1.0).validate()

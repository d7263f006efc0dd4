"""The search space as a define-by-run Optuna sampling of `ArchSpec`, and its inverse for the seeds.

`sample_spec(trial)` asks an Optuna trial for every choice the space has; `spec_to_params(spec)`
gives the parameters that make `sample_spec` return exactly `spec`, so published architectures can
be enqueued as the first trials. Parameter names are stable (they live in users' study storages).

Choices, per stage i (1..4): the block pattern (one type, or an alternation with MSA such as SMT's
SAM/MSA), depth, width (multiples of 32), the MLP/expansion ratio, each block family's own
parameters (kernel, dilation, centre, heads via head dimension, ...), and the downsampling; globally:
the stem, where the closing norm sits (each stage, as VAN/SMT, or the head, as ConvNeXt), a pre-logits
layer, SLaK's width multiplier and sparsity.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from .spec import STRIDING_BLOCKS, ArchSpec, BlockSpec, HeadSpec, StageSpec, StemSpec

__all__ = ["PATTERNS", "SPACE_LIMITS", "SpaceLimits", "space_limits", "sample_spec", "spec_to_params", "SearchSpace",
           "fit_heads", "SmallestChoiceTrial", "RandomChoiceTrial"]

# Block patterns a stage can take: single types and alternations with MSA (mixed stages).
PATTERNS: dict[str, tuple[str, ...]] = {
    "convnext": ("convnext",), "mbconv": ("mbconv",), "lka": ("lka",), "pelk": ("pelk",), "sam": ("sam",),
    "msa": ("msa",), "sam+msa": ("sam", "msa"), "lka+msa": ("lka", "msa"), "convnext+msa": ("convnext", "msa"),
    "mbconv+msa": ("mbconv", "msa"),
    # conv variants (issue 5)
    "condconv": ("condconv",), "dynconv": ("dynconv",), "ghost": ("ghost",), "scconv": ("scconv",),
    "doconv": ("doconv",), "resnest": ("resnest",), "involution": ("involution",),
}
# (min, max) depth and width per stage, both sampled log-uniformly (small nets are as likely as big
# ones, so most candidates fit a budget); widths are rounded to multiples of 32.
SPACE_LIMITS = {
    "depth": ((1, 6), (1, 8), (1, 30), (1, 4)),
    "width": ((32, 256), (32, 512), (64, 1024), (64, 1536)),
}
# The budget for which SPACE_LIMITS are drawn whole: at 20 GFLOPs about 15% of uniform draws are over
# budget. Below it the upper limits shrink (see `space_limits`), so small budgets still get most draws
# under budget instead of rejecting nearly all of them (at 1 GFLOPs 95% of full-range draws are over).
FULL_RANGE_BUDGET = 20e9
STEMS = {  # type -> (kernels, norm)
    "overlap": ((3, 5, 7), "bn"), "patch": ((4,), "ln"), "conv2": ((3, 7), "ln"), "deep": ((3,), "bn"),
}
MLP_RATIOS = (2.0, 3.0, 4.0, 6.0, 8.0)
CONVNEXT_KERNELS = (3, 5, 7, 9, 11, 13)
MBCONV_KERNELS = (3, 5)
LKA_DILATIONS = (1, 2, 3, 4)
LKA_DILATED_KERNELS = (3, 5, 7, 9)
PELK_KERNELS = (7, 101)  # inclusive range, log-uniform, made odd
PELK_CENTERS = (3, 5, 7)
PELK_RATIOS = (0.25, 0.375, 0.5)
SAM_HEADS = (2, 3, 4)
SAM_EXPANDS = (1, 2, 3)
HEAD_DIMS = (16, 32, 64)
MSA_STYLES = ("coatnet", "smt")  # rel-pos bias + plain MLP, or value conv + conv MLP
CONDCONV_KERNELS = (3, 5, 7)
CONDCONV_EXPERTS = (4, 8)
DYNCONV_KERNELS = (3, 5, 7)
DYNCONV_NUM_KERNELS = (2, 4)  # the temperature is not searched (the paper's 30, annealed in training)
GHOST_RATIOS = (2, 3)
GHOST_KERNELS = (1, 3)
GHOST_DW_KERNELS = (3, 5)
SCCONV_KERNELS = (3, 5)
SCCONV_POOLINGS = (2, 4)
DOCONV_KERNELS = (3, 5, 7)
DOCONV_DEPTH_MULTS = (1, 2)  # d_mul = multiple * kernel^2
RESNEST_KERNELS = (3, 5)
RESNEST_RADICES = (1, 2, 4)
RESNEST_CARDINALITIES = (1, 2)  # the attention reduction is not searched (the paper's 4)
INVOLUTION_KERNELS = (3, 5, 7, 9)
INVOLUTION_GROUP_CHANNELS = (8, 16, 32)
INVOLUTION_REDUCTIONS = (2, 4)
# the conv variants' searched parameters: type -> ((parameter, choices), ...), the Optuna name being
# s{i}_{type}_{parameter}; the spec value is the choice itself except for doconv's depth_mult (see _block)
CONV_VARIANT_CHOICES: dict[str, tuple[tuple[str, tuple[Any, ...]], ...]] = {
    "condconv": (("kernel", CONDCONV_KERNELS), ("experts", CONDCONV_EXPERTS)),
    "dynconv": (("kernel", DYNCONV_KERNELS), ("num_kernels", DYNCONV_NUM_KERNELS)),
    "ghost": (("ratio", GHOST_RATIOS), ("kernel", GHOST_KERNELS), ("dw_kernel", GHOST_DW_KERNELS)),
    "scconv": (("kernel", SCCONV_KERNELS), ("pooling", SCCONV_POOLINGS)),
    "doconv": (("kernel", DOCONV_KERNELS), ("depth_mult", DOCONV_DEPTH_MULTS)),
    "resnest": (("kernel", RESNEST_KERNELS), ("radix", RESNEST_RADICES), ("cardinality", RESNEST_CARDINALITIES)),
    "involution": (("kernel", INVOLUTION_KERNELS), ("group_channels", INVOLUTION_GROUP_CHANNELS),
                   ("reduction", INVOLUTION_REDUCTIONS)),
}
WIDTH_MULTS = (1.0, 1.3)
SPARSITIES = (0.0, 0.4)


def _round32(width: int) -> int:
    return max(32, int(round(width / 32)) * 32)


def fit_heads(width: int, heads: int) -> int:
    """The largest head count <= `heads` that divides `width` (so every sampled spec is valid)."""
    return next(h for h in range(max(1, min(heads, width)), 0, -1) if width % h == 0)


@dataclass(frozen=True)
class SpaceLimits:
    """How far the space reaches: per-stage (min, max) depth and width, and choices left out by name.

    `excluded` maps a parameter name (`stem`, `s{i}_pattern`) to choices that cannot fit a budget even
    at their smallest, so a small-budget search does not keep drawing them.
    """

    depth: tuple[tuple[int, int], ...] = SPACE_LIMITS["depth"]
    width: tuple[tuple[int, int], ...] = SPACE_LIMITS["width"]
    excluded: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def choices(self, name: str, choices: tuple[str, ...]) -> tuple[str, ...]:
        left_out = dict(self.excluded).get(name, ())
        return tuple(c for c in choices if c not in left_out)


def space_limits(budget_flops: float | None = None) -> SpaceLimits:
    """Depth and width ranges for a FLOP budget (the whole SPACE_LIMITS for None or >= 20 G).

    Each maximum is scaled by (budget / 20 G)^(1/2); minima never change, so the smallest architectures
    stay reachable at every budget. Measured with random draws (`benchmarks/rejection_rate.py`): the
    square root keeps the share over budget lower than a cube root at every budget (e.g. 0.41 against
    0.83 at 0.3 G), with accepted draws still spread up to the budget.
    """
    if budget_flops is None or budget_flops >= FULL_RANGE_BUDGET:
        return SpaceLimits()
    shrink = (budget_flops / FULL_RANGE_BUDGET) ** 0.5
    return SpaceLimits(
        depth=tuple((lo, max(lo, round(hi * shrink))) for lo, hi in SPACE_LIMITS["depth"]),
        width=tuple((lo, max(lo, _round32(hi * shrink))) for lo, hi in SPACE_LIMITS["width"]),
    )


def _block(trial: Any, i: int, kind: str, width: int, mlp_ratio: float) -> BlockSpec:
    p = f"s{i}_{kind}"
    if kind == "convnext":
        return BlockSpec(kind, {"kernel": trial.suggest_categorical(f"{p}_kernel", CONVNEXT_KERNELS),
                                "mlp_ratio": mlp_ratio})
    if kind == "mbconv":
        return BlockSpec(kind, {"kernel": trial.suggest_categorical(f"{p}_kernel", MBCONV_KERNELS),
                                "expand_ratio": mlp_ratio})
    if kind == "lka":
        dilation = trial.suggest_categorical(f"{p}_dilation", LKA_DILATIONS)
        dilated = trial.suggest_categorical(f"{p}_dilated_kernel", LKA_DILATED_KERNELS)
        return BlockSpec(kind, {"kernel": dilation * dilated, "dilation": dilation, "mlp_ratio": mlp_ratio})
    if kind == "pelk":
        return BlockSpec(kind, {"kernel": trial.suggest_int(f"{p}_kernel", *PELK_KERNELS, log=True) | 1,
                                "center": trial.suggest_categorical(f"{p}_center", PELK_CENTERS),
                                "conv_ratio": trial.suggest_categorical(f"{p}_conv_ratio", PELK_RATIOS),
                                "mlp_ratio": mlp_ratio})
    if kind == "sam":
        heads = trial.suggest_categorical(f"{p}_heads", SAM_HEADS)
        return BlockSpec(kind, {"heads": fit_heads(width, heads),
                                "expand_ratio": trial.suggest_categorical(f"{p}_expand", SAM_EXPANDS),
                                "mlp_ratio": mlp_ratio})
    if kind in CONV_VARIANT_CHOICES:
        chosen = {name: trial.suggest_categorical(f"{p}_{name}", choices)
                  for name, choices in CONV_VARIANT_CHOICES[kind]}
        if kind == "doconv":
            chosen["d_mul"] = chosen.pop("depth_mult") * chosen["kernel"] ** 2
        return BlockSpec(kind, {**chosen, "mlp_ratio": mlp_ratio})
    head_dim = trial.suggest_categorical(f"{p}_head_dim", HEAD_DIMS)
    style = trial.suggest_categorical(f"{p}_style", MSA_STYLES)
    heads = fit_heads(width, max(1, width // head_dim))
    return BlockSpec(kind, {"heads": heads, "mlp_ratio": mlp_ratio, "rel_pos": style == "coatnet",
                            "v_conv": style == "smt", "mlp": "conv" if style == "smt" else "plain"})


def sample_spec(trial: Any, limits: SpaceLimits | None = None) -> ArchSpec:
    """Sample one architecture from an Optuna trial (or `optuna.trial.FixedTrial`).

    `limits` narrows the space, e.g. to a budget (`nas.budget.budget_limits`); parameter names are
    the same whatever the limits.
    """
    limits = limits or SpaceLimits()
    stem_type = trial.suggest_categorical("stem", limits.choices("stem", tuple(STEMS)))
    kernels, stem_norm = STEMS[stem_type]
    stem_kernel = trial.suggest_categorical(f"stem_{stem_type}_kernel", kernels) if len(kernels) > 1 else kernels[0]
    stem_width = trial.suggest_int("stem_width", 32, 128, step=32) if stem_type == "deep" else None
    width_mult = trial.suggest_categorical("width_mult", WIDTH_MULTS)
    norm_at = trial.suggest_categorical("norm_at", ("stage", "head"))
    stages = []
    for i in range(1, 5):
        pattern = PATTERNS[trial.suggest_categorical(f"s{i}_pattern", limits.choices(f"s{i}_pattern", tuple(PATTERNS)))]
        depth = trial.suggest_int(f"s{i}_depth", *limits.depth[i - 1], log=True)
        width = _round32(trial.suggest_int(f"s{i}_width", *limits.width[i - 1], log=True))
        mlp_ratio = trial.suggest_categorical(f"s{i}_mlp_ratio", MLP_RATIOS)
        effective = int(width * width_mult)
        blocks = tuple(_block(trial, i, kind, effective, mlp_ratio) for kind in dict.fromkeys(pattern))
        can_stride = blocks[0].type in STRIDING_BLOCKS
        if i == 1 and stem_type != "deep":
            downsample, down_norm = "none", "ln"
        else:
            downsample = trial.suggest_categorical(f"s{i}_downsample", ("overlap", "patch", "block"))
            if downsample == "block" and not can_stride:
                downsample = "overlap"  # only MBConv and MSA blocks can stride themselves
            down_norm = trial.suggest_categorical(f"s{i}_down_norm", ("bn", "ln")) if downsample == "overlap" else "ln"
        stages.append(StageSpec(depth=depth, width=width, blocks=blocks, downsample=downsample,
                                down_norm=down_norm, norm_out=norm_at == "stage"))
    hidden = trial.suggest_categorical("pre_logits", (False, True))
    sparsity = trial.suggest_categorical("sparsity", SPARSITIES)
    head = HeadSpec(norm=norm_at == "head", hidden=int(stages[-1].width * width_mult) if hidden else None)
    spec = ArchSpec(StemSpec(stem_type, width=stem_width, kernel=stem_kernel, norm=stem_norm), tuple(stages),
                    head, width_mult=width_mult, sparsity=sparsity)
    return spec.validate()


class SearchSpace:
    """A picklable define-by-run space for Ray Tune's OptunaSearch (closures break its checkpoints).

    Returns the sampled spec's JSON as a constant of the config, so trials receive the whole spec.
    `limits` narrows the space to the run's budget (`nas.budget.budget_limits`).
    """

    def __init__(self, limits: SpaceLimits | None = None) -> None:
        self.limits = limits

    def __call__(self, trial: Any) -> dict[str, Any]:
        return {"spec": sample_spec(trial, self.limits).to_json()}


class SmallestChoiceTrial:
    """A stand-in for an Optuna trial that takes the smallest value of every choice.

    `fixed` overrides choices by parameter name (e.g. a stage's pattern); choices that are not numbers
    take their first value, except downsampling, which takes the cheaper 2x2 patch. `sample_spec` on it
    gives the narrowest, shallowest, lightest point of the space for a stem and set of patterns: what
    the FLOP floor of the space is computed from.
    """

    def __init__(self, fixed: dict[str, Any] | None = None) -> None:
        self.fixed = dict(fixed or {})

    def suggest_categorical(self, name: str, choices: tuple[Any, ...]) -> Any:
        if name in self.fixed:
            return self.fixed[name]
        if name.endswith("_downsample"):
            return "patch"
        if all(isinstance(c, (int, float)) for c in choices):
            return min(choices)
        return choices[0]

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return self.fixed.get(name, low)


class RandomChoiceTrial:
    """A stand-in for an Optuna trial that draws every choice at random, as Optuna's RandomSampler would
    (integers log-uniform where the space says so), without a study: `sample_spec` on it gives a random
    point of the space in microseconds. `fixed` pins choices by parameter name (e.g. a stage's pattern).
    """

    def __init__(self, rng: random.Random, fixed: dict[str, Any] | None = None) -> None:
        self.rng = rng
        self.fixed = dict(fixed or {})

    def suggest_categorical(self, name: str, choices: tuple[Any, ...]) -> Any:
        return self.fixed[name] if name in self.fixed else self.rng.choice(choices)

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        if name in self.fixed:
            return self.fixed[name]
        if log:  # as Optuna: uniform in log over [low - 0.5, high + 0.5], rounded
            value = round(math.exp(self.rng.uniform(math.log(low - 0.5), math.log(high + 0.5))))
            return min(high, max(low, value))
        return low + step * self.rng.randrange((high - low) // step + 1)


def spec_to_params(spec: ArchSpec) -> dict[str, Any]:
    """The Optuna parameters that make `sample_spec` return `spec` (name aside).

    Raises ValueError naming the first field that is not a point of the space.
    """
    params: dict[str, Any] = {"stem": spec.stem.type, "width_mult": spec.width_mult, "sparsity": spec.sparsity}
    kernels, norm = STEMS[spec.stem.type]
    if len(kernels) > 1:
        params[f"stem_{spec.stem.type}_kernel"] = spec.stem.kernel
    if spec.stem.type == "deep":
        params["stem_width"] = spec.stem.width
    norm_at = "stage" if spec.stages[0].norm_out else "head"
    params["norm_at"] = norm_at
    params["pre_logits"] = spec.head.hidden is not None
    for i, stage in enumerate(spec.stages, start=1):
        pattern = next((name for name, types in PATTERNS.items()
                        if types == tuple(b.type for b in stage.blocks)), None)
        if pattern is None:
            raise ValueError(f"stage {i}: block pattern {[b.type for b in stage.blocks]} is not in the space")
        params.update({f"s{i}_pattern": pattern, f"s{i}_depth": stage.depth, f"s{i}_width": stage.width})
        ratio = stage.blocks[0].params.get("mlp_ratio", stage.blocks[0].params.get("expand_ratio"))
        params[f"s{i}_mlp_ratio"] = float(ratio)
        effective = int(stage.width * spec.width_mult)
        for block in stage.blocks:
            p, bp = f"s{i}_{block.type}", block.params
            if block.type in ("convnext", "mbconv"):
                params[f"{p}_kernel"] = bp["kernel"]
            elif block.type == "lka":
                params[f"{p}_dilation"] = bp["dilation"]
                params[f"{p}_dilated_kernel"] = bp["kernel"] // bp["dilation"]
            elif block.type == "pelk":
                params.update({f"{p}_kernel": bp["kernel"], f"{p}_center": bp["center"],
                               f"{p}_conv_ratio": bp["conv_ratio"]})
            elif block.type == "sam":
                params.update({f"{p}_heads": bp["heads"], f"{p}_expand": bp["expand_ratio"]})
            elif block.type in CONV_VARIANT_CHOICES:
                for name, _ in CONV_VARIANT_CHOICES[block.type]:
                    params[f"{p}_{name}"] = bp["d_mul"] // bp["kernel"] ** 2 if name == "depth_mult" else bp[name]
            else:
                params[f"{p}_head_dim"] = effective // bp["heads"]
                params[f"{p}_style"] = "coatnet" if bp["rel_pos"] else "smt"
        if not (i == 1 and spec.stem.type != "deep"):
            params[f"s{i}_downsample"] = stage.downsample
            if stage.downsample == "overlap":
                params[f"s{i}_down_norm"] = stage.down_norm
    return params

"""Compute budgets: parsing the command line's budget strings, and fitting seeds under a budget."""
from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any

from search_spaces.scaling import halved_mlp_ratios, mlp_ratio, scale_spec, without_pre_logits, without_width_mult
from search_spaces.space import (
    PATTERNS,
    STEMS,
    SmallestChoiceTrial,
    SpaceLimits,
    sample_spec,
    space_limits,
    spec_to_params,
)
from search_spaces.spec import ArchSpec

from .count import count

__all__ = ["BudgetError", "SeedDoesNotFit", "parse_flops", "parse_latency", "fit_to_budget", "space_floor",
           "budget_limits", "FLOPS_HELP"]

FLOPS_HELP = ("FLOPs are multiply-accumulates of the full-size model at 224x224 with 1000 classes (convs, linear "
              "layers and attention matmuls), as in the seed papers' tables")
_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_FLOPS = re.compile(r"^\s*(\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+)\s*([kmgt]?)\s*(?:flops?|macs?)?\s*$", re.IGNORECASE)
_SECONDS = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$", re.IGNORECASE)


class BudgetError(ValueError):
    """A budget that cannot be used: unreadable, or below what the search space can build."""


class SeedDoesNotFit(BudgetError):
    """A seed whose smallest version is still over the budget (the search leaves it out)."""


def parse_flops(text: str) -> float:
    """'5gflops', '5GFLOPs', '500mflops', '5e9', '5G' -> multiply-accumulates (5e9, ...)."""
    match = _FLOPS.match(str(text))
    value = float(match.group(1)) * _UNITS[match.group(2).lower()] if match else 0.0
    if not match or value <= 0:
        raise BudgetError(f"invalid FLOP budget {text!r}: write a positive number with an optional unit, "
                          "e.g. 5gflops, 500MFLOPs, 5G or 5e9")
    return value


def parse_latency(text: str) -> float:
    """'50ms', '0.05s', '50' (milliseconds) -> milliseconds."""
    match = _SECONDS.match(str(text))
    value = float(match.group(1)) * (1000.0 if (match.group(2) or "").lower() == "s" else 1.0) if match else 0.0
    if not match or value <= 0:
        raise BudgetError(f"invalid latency budget {text!r}: write a positive time, e.g. 50ms or 0.05s")
    return value


def _shrinking(spec: ArchSpec, min_width: float, step: float = 0.05) -> Iterator[tuple[ArchSpec, float]]:
    """Ever smaller versions of `spec`, in the order that keeps most of it.

    Width to `min_width`; then depth, deepest stage first, to one block per stage; then narrower, down
    to x0.05 (32 channels a stage, 64 in the widest seeds' last stage); then the lighter parts the space also holds: no
    pre-logits layer, SLaK's x1.3 widths at x1.0, and MLP / expansion ratios halved down to 2.
    Yields each version with its width factor.
    """
    factor = 1.0
    while factor > min_width + 1e-9:
        factor = round(factor - step, 2)
        yield scale_spec(spec, width=factor), factor
    depths = [s.depth for s in spec.stages]
    while max(depths) > 1:
        deepest = max(range(4), key=lambda i: (depths[i], i))
        depths[deepest] -= 1
        yield scale_spec(spec, width=factor, depths=tuple(depths)), factor
    narrowest = scale_spec(spec, width=factor, depths=tuple(depths))
    while factor > step + 1e-9:
        factor = round(factor - step, 2)
        narrower = scale_spec(spec, width=factor, depths=tuple(depths))
        if narrower != narrowest:
            narrowest = narrower
            yield narrowest, factor
    lighter = narrowest
    for lighten in (without_pre_logits, without_width_mult, halved_mlp_ratios, halved_mlp_ratios):
        if (candidate := lighten(lighter)) != lighter:
            lighter = candidate
            yield lighter, factor


def _changes(original: ArchSpec, fitted: ArchSpec, factor: float) -> str:
    """What scaling changed, for the log: widths, depths and the lighter parts."""
    said = [f"widths x{factor:g} ({original.widths()} -> {fitted.widths()})"] if factor < 1 else []
    depths = ([s.depth for s in original.stages], [s.depth for s in fitted.stages])
    if depths[0] != depths[1]:
        said.append(f"depths {depths[0]} -> {depths[1]}")
    if original.head.hidden is not None and fitted.head.hidden is None:
        said.append("no pre-logits layer")
    if original.width_mult != fitted.width_mult:
        said.append(f"width multiplier x{original.width_mult:g} -> x{fitted.width_mult:g}")
    ratios = [[mlp_ratio(stage.blocks[0]) for stage in spec.stages] for spec in (original, fitted)]
    if ratios[0] != ratios[1]:
        said.append(f"MLP ratios {ratios[0]} -> {ratios[1]}")
    return ", ".join(said)


def fit_to_budget(spec: ArchSpec, budget: float, img_size: int = 224, min_width: float = 0.5,
                  ) -> tuple[ArchSpec, str]:
    """Scale `spec` down until its FLOPs fit (see `_shrinking` for the order of the steps).

    Returns the spec and a sentence saying what changed ('' when it already fits). Raises
    SeedDoesNotFit if even the smallest version is over the budget: its block types cost more than that.
    """
    flops = count(spec, img_size).flops
    if flops <= budget:
        return spec, ""
    smallest = spec
    for smallest, factor in _shrinking(spec, min_width):
        if (fitted := count(smallest, img_size).flops) <= budget:
            note = f"{spec.name}: {flops / 1e9:.3g} -> {fitted / 1e9:.3g} GFLOPs ({_changes(spec, smallest, factor)})"
            return smallest.replace(name=spec.name), note
    raise SeedDoesNotFit(f"{spec.name or 'spec'} needs {count(smallest, img_size).flops / 1e9:.3g} GFLOPs even at "
                         f"widths {smallest.widths()}, one block per stage and the lightest MLPs; over the "
                         f"{budget / 1e9:.3g} G budget")


@cache  # a fact of the space: the CLI's floor check and the search's narrowing share one computation
def _smallest_costs(img_size: int) -> dict[str, dict[Any, float]]:
    """For `stem` and each `s{i}_pattern`, the FLOPs of the smallest architecture taking each choice
    (read only: the result is cached).

    Every other choice is at its smallest (`SmallestChoiceTrial`) and the other stages take their
    cheapest pattern for that stem (a stage's cost depends only on that stage, so the cheapest
    patterns are found one stage at a time).
    """
    def flops(fixed: dict[str, Any]) -> float:
        return count(sample_spec(SmallestChoiceTrial(fixed)), img_size).flops

    costs: dict[str, dict[Any, float]] = {"stem": {}, **{f"s{i}_pattern": {} for i in range(1, 5)}}
    for stem in STEMS:
        cheapest: dict[str, Any] = {"stem": stem, **{f"s{i}_pattern": "ghost" for i in range(1, 5)}}
        for i in range(1, 5):
            by_pattern = {p: flops({**cheapest, f"s{i}_pattern": p}) for p in PATTERNS}
            cheapest[f"s{i}_pattern"] = min(by_pattern, key=by_pattern.get)
        costs["stem"][stem] = flops(cheapest)
        for i in range(1, 5):
            for pattern in PATTERNS:
                known = costs[f"s{i}_pattern"].get(pattern, float("inf"))
                costs[f"s{i}_pattern"][pattern] = min(known, flops({**cheapest, f"s{i}_pattern": pattern}))
    return costs


def space_floor(img_size: int = 224) -> float:
    """The FLOPs of the smallest architecture of the search space (budgets below it cannot be searched)."""
    return min(_smallest_costs(img_size)["stem"].values())


def budget_limits(budget_flops: float, keep: tuple[ArchSpec, ...] = (), img_size: int = 224) -> SpaceLimits:
    """The search space narrowed to a budget: `space_limits`' ranges, and without the stems and stage
    patterns whose smallest architecture is already over the budget (e.g. global attention on the
    56 x 56 map of stage 1 below 0.67 GFLOPs). The ranges are widened so that every spec of `keep`
    (the seeds fitted to the budget) stays a point of the space."""
    limits = space_limits(budget_flops)
    kept = [spec_to_params(spec) for spec in keep]
    excluded = tuple((name, tuple(c for c, flops in by_choice.items()
                                  if flops > budget_flops and all(p.get(name) != c for p in kept)))
                     for name, by_choice in _smallest_costs(img_size).items())

    def covering(ranges: tuple[tuple[int, int], ...], key: str) -> tuple[tuple[int, int], ...]:
        values = [[p[f"s{i}_{key}"] for p in kept] for i in range(1, 5)]
        return tuple((min([lo, *v]), max([hi, *v])) for (lo, hi), v in zip(ranges, values))

    return SpaceLimits(depth=covering(limits.depth, "depth"), width=covering(limits.width, "width"),
                       excluded=tuple((n, c) for n, c in excluded if c))

"""Compute budgets: parsing the command line's budget strings, and fitting seeds under a budget."""
from __future__ import annotations

import re

from search_spaces.scaling import scale_spec
from search_spaces.spec import ArchSpec

from .count import count

__all__ = ["BudgetError", "parse_flops", "parse_latency", "fit_to_budget", "FLOPS_HELP"]

FLOPS_HELP = ("FLOPs are multiply-accumulates of the full-size model at 224x224 with 1000 classes (convs, linear "
              "layers and attention matmuls), as in the seed papers' tables")
_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_FLOPS = re.compile(r"^\s*(\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+)\s*([kmgt]?)\s*(?:flops?|macs?)?\s*$", re.IGNORECASE)
_SECONDS = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$", re.IGNORECASE)


class BudgetError(ValueError):
    """A budget string that cannot be read; the message shows accepted forms."""


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


def fit_to_budget(spec: ArchSpec, budget: float, img_size: int = 224, min_width: float = 0.5,
                  ) -> tuple[ArchSpec, str]:
    """Scale `spec` down until its FLOPs fit: width first (to `min_width`), then depth, deepest stage first.

    Returns the spec and a sentence saying what changed ('' when it already fits).
    Raises BudgetError if even one block per stage at the smallest width is over the budget.
    """
    flops = count(spec, img_size).flops
    if flops <= budget:
        return spec, ""
    factor, fitted = 1.0, spec
    while count(fitted, img_size).flops > budget and factor > min_width + 1e-9:
        factor = round(factor - 0.05, 2)
        fitted = scale_spec(spec, width=factor)
    depths = [s.depth for s in fitted.stages]
    while count(fitted, img_size).flops > budget and max(depths) > 1:
        deepest = max(range(4), key=lambda i: (depths[i], i))
        depths[deepest] -= 1
        fitted = scale_spec(spec, width=factor, depths=tuple(depths))
    final = count(fitted, img_size).flops
    if final > budget:
        raise BudgetError(f"{spec.name or 'spec'} cannot fit {budget / 1e9:.3g} GFLOPs even at width x{factor} "
                          f"and one block per stage ({final / 1e9:.3g} G); raise --budget")
    change = f"widths x{factor:g} ({[s.width for s in fitted.stages]})" if factor < 1 else "full width"
    if depths != [s.depth for s in spec.stages]:
        change += f", depths {[s.depth for s in spec.stages]} -> {depths}"
    return fitted.replace(name=spec.name), (f"{spec.name}: {flops / 1e9:.2f} -> {final / 1e9:.2f} GFLOPs ({change})")

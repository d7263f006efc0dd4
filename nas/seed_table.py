"""How the seeds' counts compare with their papers and official code (`scripts/seeds.py`)."""
from __future__ import annotations

from typing import Any

from search_spaces import REFERENCES, SEEDS

from .count import count

__all__ = ["PARAM_TOLERANCE", "FLOP_TOLERANCE", "PAPER_TOLERANCE", "seed_table", "format_table"]

PARAM_TOLERANCE = 0.005  # against the official code's exact parameter count
FLOP_TOLERANCE = 0.02  # against the official code's MACs
PAPER_TOLERANCE = 0.05  # PeLK, no code: nonzero counts against the paper's table


def seed_table(img_size: int = 224, num_classes: int = 1000) -> list[dict[str, Any]]:
    """One row per seed: published, reference and our counts, their ratios, and whether they agree."""
    rows = []
    for name, spec in SEEDS.items():
        ref = REFERENCES[name]
        c = count(spec, img_size, num_classes)
        row: dict[str, Any] = dict(
            name=name, layout=spec.layout, source=ref["source"],
            published_params_m=ref["published"][0], published_gflops=ref["published"][1],
            params=c.params, gflops=round(c.flops / 1e9, 4),
            nonzero_params=c.nonzero_params, nonzero_gflops=round(c.nonzero_flops / 1e9, 4))
        if ref["reference"] is not None:
            row.update(reference_params=ref["reference"][0], reference_gflops=ref["reference"][1],
                       params_ratio=c.params / ref["reference"][0], flops_ratio=c.flops / 1e9 / ref["reference"][1])
            row["ok"] = (abs(row["params_ratio"] - 1) <= PARAM_TOLERANCE
                         and abs(row["flops_ratio"] - 1) <= FLOP_TOLERANCE)
        else:
            row.update(reference_params=None, reference_gflops=None,
                       params_ratio=c.nonzero_params / 1e6 / ref["published"][0],
                       flops_ratio=c.nonzero_flops / 1e9 / ref["published"][1])
            row["ok"] = (abs(row["params_ratio"] - 1) <= PAPER_TOLERANCE
                         and abs(row["flops_ratio"] - 1) <= PAPER_TOLERANCE)
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table; ratios are ours / reference (PeLK: our nonzero counts / the paper)."""
    head = (f"{'seed':<10} {'layout':<9} {'published':>12} {'reference':>20} {'ours':>20} "
            f"{'params x':>9} {'flops x':>8}  ok")
    lines = [head, "-" * len(head)]
    for r in rows:
        pub = f"{r['published_params_m']:.1f}M/{r['published_gflops']:.1f}G"
        if r["reference_params"] is not None:
            ref = f"{r['reference_params']:,}/{r['reference_gflops']:.3f}"
            ours = f"{r['params']:,}/{r['gflops']:.3f}"
        else:
            ref = "(no code)"
            ours = f"nz {r['nonzero_params'] / 1e6:.2f}M/{r['nonzero_gflops']:.3f}"
        lines.append(f"{r['name']:<10} {r['layout']:<9} {pub:>12} {ref:>20} {ours:>20} "
                     f"{r['params_ratio']:>9.4f} {r['flops_ratio']:>8.4f}  {'yes' if r['ok'] else 'NO'}")
    return "\n".join(lines)

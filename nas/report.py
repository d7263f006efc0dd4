"""The Pareto-front report: one self-contained HTML page (it opens offline) and an optional PNG.

Accuracy against FLOPs and against latency with the non-dominated front as a line and the budgets as
lines, seeds labelled, each point's hover telling its layout, kernels, heads and numbers; the
hypervolume of the front as trials complete; and a table of the front.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from search_spaces.spec import ArchSpec

from .results import pareto_front, pareto_mask

__all__ = ["hypervolume", "hypervolume_history", "normalised_objectives", "describe_blocks", "write_report",
           "write_png"]

_logger = logging.getLogger(__name__)


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact hypervolume dominated by `points` (minimisation, 3 objectives) up to `reference`."""
    pts = np.asarray(points, float)
    pts = pts[np.all(pts < reference, axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[np.argsort(pts[:, 2])]
    volume = 0.0
    for i in range(len(pts)):  # slab between this point's z and the next one's
        z_top = pts[i + 1, 2] if i + 1 < len(pts) else reference[2]
        if z_top <= pts[i, 2]:
            continue
        area, best_y = 0.0, reference[1]
        for x, y in sorted(map(tuple, pts[: i + 1, :2])):  # 2-D union of boxes [x, ref_x] x [y, ref_y]
            if y < best_y:
                area += (reference[0] - x) * (best_y - y)
                best_y = y
        volume += area * (z_top - pts[i, 2])
    return volume


def normalised_objectives(frame: pd.DataFrame, budget: float, max_latency: float) -> np.ndarray:
    """Normalised minimisation objectives: 1 - accuracy, FLOPs / budget, latency / worst latency."""
    return np.stack([1 - frame.accuracy.to_numpy(float) / 100, frame.flops.to_numpy(float) / budget,
                     frame.latency_ms.to_numpy(float) / max_latency], axis=1)


def hypervolume_history(frame: pd.DataFrame, budget: float) -> pd.DataFrame:
    """Hypervolume of the completed trials' front after each trial (in trial-number order)."""
    done = frame[frame.state == "COMPLETE"].dropna(subset=["accuracy", "flops", "latency_ms"]).sort_values("number")
    if done.empty:
        return pd.DataFrame(columns=["number", "hypervolume"])
    points = normalised_objectives(done, budget, float(done.latency_ms.max()) * 1.1)
    reference = np.array([1.0, 1.0, 1.0])
    return pd.DataFrame({"number": done.number.to_numpy(),
                         "hypervolume": [hypervolume(points[: i + 1], reference) for i in range(len(done))]})


def describe_blocks(spec_json: str) -> str:
    """Per stage, depth x block codes with kernels and heads, e.g. '3xL21d3 | 2xS4h | 8xSM'."""
    try:
        spec = ArchSpec.from_json(spec_json)
    except Exception:  # a row without a spec (should not happen) still gets a point
        return ""
    parts = []
    for stage in spec.stages:
        codes = []
        for b in stage.blocks:
            p = b.params
            detail = {"lka": f"{p.get('kernel')}d{p.get('dilation')}", "sam": f"{p.get('heads')}h",
                      "msa": f"{p.get('heads')}h"}.get(b.type, str(p.get("kernel", "")))
            codes.append(f"{b.code}{detail}")
        parts.append(f"{stage.depth}x{'+'.join(codes)} w{int(stage.width * spec.width_mult)}")
    return " | ".join(parts)


def _hover(frame: pd.DataFrame) -> list[str]:
    return [f"trial {r.number}{' (' + r.seed + ')' if isinstance(r.seed, str) and r.seed else ''}: {r.layout}<br>"
            f"{describe_blocks(r.spec)}<br>params {r.params / 1e6:.2f} M, {r.flops / 1e9:.3f} GFLOPs, "
            f"{r.latency_ms:.1f} ms, proxy top-1 {r.accuracy:.2f}%" for r in frame.itertuples()]


def _figures(frame: pd.DataFrame, front: pd.DataFrame, budget: float | None, latency_budget: float | None) -> list:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    shown = frame[frame.state.isin(["COMPLETE", "PRUNED"])].dropna(subset=["accuracy", "latency_ms", "flops"])
    seeds = shown[shown.seed.fillna("") != ""]
    main = make_subplots(rows=1, cols=2, subplot_titles=("proxy accuracy vs FLOPs", "proxy accuracy vs latency"),
                         horizontal_spacing=0.08)
    for col, x, scale, unit in ((1, "flops", 1e9, "GFLOPs (MACs at 224)"), (2, "latency_ms", 1.0, "latency (ms)")):
        for state, symbol, color in (("COMPLETE", "circle", "#1f77b4"), ("PRUNED", "x", "#9a9a9a")):
            part = shown[shown.state == state]
            on_front = part.number.isin(front.number) if len(front) else part.number.isin([])
            main.add_trace(go.Scatter(
                x=part[x].astype(float) / scale, y=part.accuracy, mode="markers",
                name="complete (ringed: on the 3-objective front)" if state == "COMPLETE" else "stopped early (ASHA)",
                marker=dict(symbol=symbol, size=9, color=color,
                            line=dict(width=[2.5 if f else 0 for f in on_front], color="#d62728")),
                text=_hover(part), hoverinfo="text", legendgroup=state, showlegend=col == 1), row=1, col=col)
        done = shown[shown.state == "COMPLETE"]
        if len(done):  # the front of accuracy against this one cost
            costs = done[x].to_numpy(float)
            mask = pareto_mask(done.accuracy.to_numpy(float), costs, costs)
            line = done[mask].sort_values(x)
            main.add_trace(go.Scatter(x=line[x].astype(float) / scale, y=line.accuracy, mode="lines",
                                      name="Pareto front", line=dict(width=2, color="#d62728", shape="hv"),
                                      legendgroup="front", showlegend=col == 1, hoverinfo="skip"), row=1, col=col)
        if len(seeds):
            main.add_trace(go.Scatter(x=seeds[x].astype(float) / scale, y=seeds.accuracy, mode="text",
                                      text=seeds.seed, textposition="top center", showlegend=False,
                                      hoverinfo="skip"), row=1, col=col)
        main.update_xaxes(title_text=unit, row=1, col=col)
    if budget:
        main.add_vline(x=budget / 1e9, line_dash="dash", annotation_text="budget", row=1, col=1)
    if latency_budget:
        main.add_vline(x=latency_budget, line_dash="dash", annotation_text="latency budget", row=1, col=2)
    main.update_yaxes(title_text="proxy top-1 (%)")
    main.update_layout(height=520, title="hybrid-nas search: accuracy against cost")

    history = hypervolume_history(frame, budget or float(frame.flops.max() or 1))
    hv = go.Figure(go.Scatter(x=history.number, y=history.hypervolume, mode="lines+markers"))
    hv.update_layout(height=320, title="hypervolume of the front after each trial (normalised objectives)",
                     xaxis_title="trial number", yaxis_title="hypervolume")

    columns = ["number", "seed", "layout", "params", "flops", "latency_ms", "accuracy"]
    cells = front[columns].copy() if len(front) else pd.DataFrame(columns=columns)
    cells["flops"] = (cells.flops.astype(float) / 1e9).round(3)
    cells["params"] = (cells.params.astype(float) / 1e6).round(2)
    cells["latency_ms"] = cells.latency_ms.astype(float).round(1)
    cells["accuracy"] = cells.accuracy.astype(float).round(2)
    cells["blocks"] = [describe_blocks(s) for s in front.spec] if len(front) else []
    table = go.Figure(go.Table(
        header=dict(values=["trial", "seed", "layout", "params (M)", "GFLOPs", "latency (ms)", "proxy top-1 (%)",
                            "blocks"]),
        cells=dict(values=[cells[c].fillna("") for c in cells.columns])))
    table.update_layout(title=f"Pareto front ({len(front)} architectures)", height=200 + 60 * max(1, len(front)))
    return [main, hv, table]


def write_report(frame: pd.DataFrame, path: Path, budget: float | None = None,
                 latency_budget: float | None = None, front: pd.DataFrame | None = None) -> Path:
    """Write the self-contained page (plotly.js inlined once, about 5 MB); `front` if already known."""
    front = pareto_front(frame) if front is None else front
    figures = _figures(frame, front, budget, latency_budget)
    body = "\n".join(fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"figure-{i}")
                     for i, fig in enumerate(figures))
    points = int(frame.state.isin(["COMPLETE", "PRUNED"]).sum())
    path.write_text(f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>hybrid-nas Pareto front</title></head>
<body data-points="{points}">
<h2>hybrid-nas: {points} trained candidates, {len(front)} on the front</h2>
{body}
</body></html>""")
    return path


def write_png(frame: pd.DataFrame, path: Path, budget: float | None = None) -> Path | None:
    """The main plot as PNG through kaleido, which needs a Chrome/Chromium; None when there is none."""
    browser = next((shutil.which(b) for b in ("chromium-headless-shell", "chromium", "google-chrome")
                    if shutil.which(b)), None)
    try:
        import kaleido  # noqa: F401
    except ImportError:
        browser = None
    if browser is None:
        _logger.info("no PNG: kaleido and a Chromium are needed (pip install kaleido; apt-get install chromium)")
        return None
    os.environ.setdefault("BROWSER_PATH", browser)
    _figures(frame, pareto_front(frame), budget, None)[0].write_image(str(path), width=1400, height=560)
    return path


def front_records(front: pd.DataFrame) -> list[dict]:
    """pareto.json's records: the non-dominated specs (rows of `pareto_front`) with their numbers."""
    return [dict(number=int(r.number), seed=r.seed if isinstance(r.seed, str) else "", layout=r.layout,
                 params=int(r.params), flops=int(r.flops), latency_ms=float(r.latency_ms),
                 accuracy=float(r.accuracy), spec=json.loads(r.spec)) for r in front.itertuples()]

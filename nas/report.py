"""The Pareto-front report: one self-contained HTML page (it opens offline) and an optional PNG.

Accuracy against FLOPs and against latency with the non-dominated front as a line and the budgets as
lines, seeds labelled, each point's hover telling its layout, kernels, heads and numbers; promoted
members' higher-fidelity accuracy as a second marker joined to the proxy's; the hypervolume of the
front as trials complete; and a table of the front with the proxy's and the promoted accuracy and their
rank agreement.
"""
from __future__ import annotations

import html
import logging
import os
import shutil
from pathlib import Path

import optuna
import pandas as pd

from search_spaces.spec import ArchSpec

from .results import (
    HV_REFERENCE,
    completed_rows,
    hypervolume,
    hypervolume_points,
    pareto_front,
    pareto_mask,
    promotion_fidelity,
    promotion_summary,
    write_results,
)

__all__ = ["hypervolume_history", "describe_blocks", "write_report", "write_run", "write_png", "promotion_text"]

_logger = logging.getLogger(__name__)


def hypervolume_history(frame: pd.DataFrame, budget: float) -> pd.DataFrame:
    """Hypervolume of the completed trials' front after each trial (in trial-number order)."""
    done = completed_rows(frame).sort_values("number")
    if done.empty:
        return pd.DataFrame(columns=["number", "hypervolume"])
    points = hypervolume_points(done, budget)
    return pd.DataFrame({"number": done.number.to_numpy(),
                         "hypervolume": [hypervolume(points[: i + 1], HV_REFERENCE) for i in range(len(done))]})


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


def _fidelity_words(fidelity: dict | None) -> str:
    if not fidelity:
        return "a higher fidelity"
    size = "the full model" if fidelity.get("width") == 1.0 and fidelity.get("max_depth") is None else (
        f"width x{fidelity.get('width')}, depth <= {fidelity.get('max_depth')}")
    images = fidelity.get("train_images")
    return (f"{size}, {fidelity.get('epochs')} epochs on {images:,} images of {fidelity.get('img_size')} px"
            if isinstance(images, int) else f"{size}, {fidelity.get('epochs')} epochs")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def promotion_text(summary: dict | None) -> str:
    """One sentence on the promotions: how many, at what fidelity, and the rank agreement (plain text)."""
    if not summary or not (summary.get("members") or summary.get("promotions_failed")):
        return ""
    members = summary["members"]
    pairs = ", ".join(f"trial {m['number']} {m['proxy_accuracy']:.1f}% -> {m['promoted_accuracy']:.1f}%"
                      for m in members)
    text = (f"Promoted {len(members)} front member(s) ({_fidelity_words(summary.get('fidelity'))}): {pairs}. "
            f"Rank agreement, proxy vs promoted top-1: Spearman {_fmt(summary.get('spearman'))}, "
            f"Kendall {_fmt(summary.get('kendall'))}")
    text += f" ({summary['note']})." if summary.get("note") else "."
    if summary.get("promotions_failed"):
        text += f" {summary['promotions_failed']} promotion(s) failed (their error is in trials.csv)."
    return text


def _promoted_traces(main, done: pd.DataFrame, x: str, scale: float, col: int, fidelity: dict | None) -> None:
    """Each promoted member's higher-fidelity accuracy: a diamond above or below its proxy point, joined to it."""
    import plotly.graph_objects as go

    if "promoted_accuracy" not in done or done.promoted_accuracy.isna().all():
        return
    promoted = done[done.promoted_accuracy.notna()]
    xs = promoted[x].astype(float).to_numpy() / scale
    line_x, line_y = [], []
    for xv, proxy, full in zip(xs, promoted.accuracy, promoted.promoted_accuracy):
        line_x += [xv, xv, None]
        line_y += [proxy, full, None]
    main.add_trace(go.Scatter(x=line_x, y=line_y, mode="lines", line=dict(width=1.5, color="#2ca02c", dash="dot"),
                              hoverinfo="skip", showlegend=False, legendgroup="promoted"), row=1, col=col)
    hover = [f"trial {r.number} promoted ({_fidelity_words(fidelity)}):<br>proxy top-1 {r.accuracy:.2f}% -> "
             f"promoted top-1 {r.promoted_accuracy:.2f}%" for r in promoted.itertuples()]
    main.add_trace(go.Scatter(x=xs, y=promoted.promoted_accuracy, mode="markers", text=hover, hoverinfo="text",
                              name="promoted: top-1 at the higher fidelity (dotted: from its proxy's)",
                              marker=dict(symbol="diamond", size=11, color="#2ca02c"), legendgroup="promoted",
                              showlegend=col == 1), row=1, col=col)


def _figures(frame: pd.DataFrame, front: pd.DataFrame, budget: float | None, latency_budget: float | None,
             promotion: dict | None = None) -> list:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    shown = frame[frame.state.isin(["COMPLETE", "PRUNED"])].dropna(subset=["accuracy", "latency_ms", "flops"])
    seeds = shown[shown.seed.fillna("") != ""]
    promoted = "promoted_accuracy" in frame and frame.promoted_accuracy.notna().any()
    what = "proxy and promoted accuracy" if promoted else "proxy accuracy"
    main = make_subplots(rows=1, cols=2, subplot_titles=(f"{what} vs FLOPs", f"{what} vs latency"),
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
        _promoted_traces(main, done, x, scale, col, (promotion or {}).get("fidelity"))
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
    main.update_yaxes(title_text="top-1 (%): proxy, promoted (diamonds)" if promoted else "proxy top-1 (%)")
    main.update_layout(height=520, title="hybrid-nas search: accuracy against cost")

    history = hypervolume_history(frame, budget or float(frame.flops.max() or 1))
    hv = go.Figure(go.Scatter(x=history.number, y=history.hypervolume, mode="lines+markers"))
    hv.update_layout(height=320, title="hypervolume of the front after each trial (normalised objectives)",
                     xaxis_title="trial number", yaxis_title="hypervolume")

    columns = ["number", "seed", "layout", "params", "flops", "latency_ms", "accuracy", "promoted_accuracy"]
    cells = front.reindex(columns=columns).copy() if len(front) else pd.DataFrame(columns=columns)
    cells["flops"] = (cells.flops.astype(float) / 1e9).round(3)
    cells["params"] = (cells.params.astype(float) / 1e6).round(2)
    cells["latency_ms"] = cells.latency_ms.astype(float).round(1)
    cells["accuracy"] = cells.accuracy.astype(float).round(2)
    cells["promoted_accuracy"] = cells.promoted_accuracy.astype(float).round(2).astype(object).where(
        cells.promoted_accuracy.notna(), "")
    cells["blocks"] = [describe_blocks(s) for s in front.spec] if len(front) else []
    table = go.Figure(go.Table(
        header=dict(values=["trial", "seed", "layout", "params (M)", "GFLOPs", "latency (ms)", "proxy top-1 (%)",
                            "promoted top-1 (%)", "blocks"]),
        cells=dict(values=[cells[c].fillna("") for c in cells.columns])))
    agreement = ""
    if promotion and promotion.get("members"):
        agreement = (f"<br><sub>promoted vs proxy rank agreement over {promotion['n']} member(s): Spearman "
                     f"{_fmt(promotion.get('spearman'))}, Kendall {_fmt(promotion.get('kendall'))}</sub>")
    table.update_layout(title=f"Pareto front ({len(front)} architectures){agreement}",
                        height=200 + 60 * max(1, len(front)))
    return [main, hv, table]


def write_report(frame: pd.DataFrame, path: Path, budget: float | None = None,
                 latency_budget: float | None = None, front: pd.DataFrame | None = None,
                 promotion: dict | None = None, latency_source: str | None = None) -> Path:
    """Write the self-contained page (plotly.js inlined once, about 5 MB); `front` and `promotion`
    (`nas.results.promotion_summary`) if already known; `latency_source` says where latencies come from
    (`SearchConfig.latency_source`)."""
    front = pareto_front(frame) if front is None else front
    if promotion is None and "promoted_accuracy" in frame:
        promotion = promotion_summary(frame)
    figures = _figures(frame, front, budget, latency_budget, promotion)
    body = "\n".join(fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"figure-{i}")
                     for i, fig in enumerate(figures))
    points = int(frame.state.isin(["COMPLETE", "PRUNED"]).sum())
    path.write_text(f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>hybrid-nas Pareto front</title></head>
<body data-points="{points}">
<h2>hybrid-nas: {points} trained candidates, {len(front)} on the front</h2>
{f'<p id="latency-source">{html.escape(latency_source[0].upper() + latency_source[1:])}.</p>' if latency_source else ""}
{f'<p id="promotion">{html.escape(promotion_text(promotion))}</p>' if promotion_text(promotion) else ""}
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
    promotion = promotion_summary(frame) if "promoted_accuracy" in frame else None
    _figures(frame, pareto_front(frame), budget, None, promotion)[0].write_image(str(path), width=1400, height=560)
    return path


def write_run(study: optuna.Study, run_dir: Path, budget: float | None = None, latency_budget: float | None = None,
              fmt: str = "csv", latency_source: str | None = None) -> pd.DataFrame:
    """Everything a run directory shows: its tables (`nas.results.write_results`) and pareto.html;
    returns the trials table."""
    frame = write_results(study, run_dir, fmt)
    write_report(frame, run_dir / "pareto.html", budget, latency_budget,
                 promotion=promotion_summary(frame, promotion_fidelity(study)), latency_source=latency_source)
    return frame

"""The run directory's tables and plots, made from the Optuna study (the run's single record)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

__all__ = ["TRIAL_COLUMNS", "trials_frame", "pareto_mask", "pareto_front", "write_results", "write_pareto_html"]

TRIAL_COLUMNS = ["number", "state", "seed", "layout", "params", "flops", "latency_ms", "accuracy", "duration_s",
                 "error", "spec"]


def _state(t: optuna.trial.FrozenTrial) -> str:
    if "rejected" in t.user_attrs:
        return "REJECTED"
    if "interrupted" in t.user_attrs:
        return "INTERRUPTED"
    return t.state.name


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial with the columns of `trials.csv` (numbers are NaN where not measured)."""
    rows: list[dict[str, Any]] = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        latency = a.get("latency_ms")
        rows.append(dict(
            number=t.number, state=_state(t), seed=a.get("seed", ""), layout=a.get("layout", ""),
            params=a.get("params"), flops=a.get("flops"), latency_ms=latency,
            accuracy=t.values[0] if t.state == TrialState.COMPLETE and "rejected" not in a else a.get("accuracy"),
            duration_s=a.get("duration_s"), error=a.get("error") or a.get("rejected") or a.get("pruned") or "",
            spec=a.get("spec", "")))
    frame = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    for col in ("params", "flops"):
        frame[col] = frame[col].astype("Int64")
    for col in ("latency_ms", "accuracy", "duration_s"):
        frame[col] = frame[col].astype("float64")
    return frame


def pareto_mask(accuracy: np.ndarray, flops: np.ndarray, latency: np.ndarray) -> np.ndarray:
    """True where no other point is at least as good on all three and better on one."""
    points = np.stack([-np.asarray(accuracy, float), np.asarray(flops, float), np.asarray(latency, float)], 1)
    mask = np.ones(len(points), dtype=bool)
    for i, p in enumerate(points):
        dominated = np.all(points <= p, axis=1) & np.any(points < p, axis=1)
        mask[i] = not dominated.any()
    return mask


def pareto_front(frame: pd.DataFrame) -> pd.DataFrame:
    """The non-dominated completed candidates (accuracy up, FLOPs and latency down)."""
    done = frame[frame.state == "COMPLETE"].dropna(subset=["accuracy", "flops", "latency_ms"])
    if done.empty:
        return done
    mask = pareto_mask(done.accuracy.to_numpy(), done.flops.to_numpy(float), done.latency_ms.to_numpy())
    return done[mask].sort_values("flops")


def write_pareto_html(frame: pd.DataFrame, front: pd.DataFrame, path: Path, budget_flops: float | None) -> None:
    """Accuracy against FLOPs and against latency, the front as a line (self-contained HTML)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    done = frame[frame.state.isin(["COMPLETE", "PRUNED"])].dropna(subset=["accuracy", "latency_ms"])
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy vs GFLOPs", "accuracy vs latency (ms)"))
    for col, x in ((1, "flops"), (2, "latency_ms")):
        scale = 1e9 if x == "flops" else 1.0
        hover = done.apply(lambda r: f"#{r.number} {r.seed or ''} {r.layout}<br>params {r.params:,}<br>"
                           f"{r.flops / 1e9:.3f} GFLOPs, {r.latency_ms:.1f} ms<br>acc {r.accuracy:.2f}", axis=1)
        fig.add_trace(go.Scatter(x=done[x].astype(float) / scale, y=done.accuracy, mode="markers",
                                 name="candidates", text=hover if len(done) else None, hoverinfo="text",
                                 showlegend=col == 1), row=1, col=col)
        if len(front):
            line = front.sort_values(x)
            fig.add_trace(go.Scatter(x=line[x].astype(float) / scale, y=line.accuracy, mode="lines+markers",
                                     name="Pareto front", showlegend=col == 1), row=1, col=col)
    if budget_flops:
        fig.add_vline(x=budget_flops / 1e9, line_dash="dash", row=1, col=1)
    fig.update_yaxes(title_text="proxy top-1 (%)")
    fig.write_html(path, include_plotlyjs=True)


def write_results(study: optuna.Study, run_dir: Path, budget_flops: float | None = None,
                  html: bool = True) -> pd.DataFrame:
    """Write trials.csv, pareto.json and (optionally) pareto.html; return the trials table."""
    frame = trials_frame(study)
    frame.to_csv(run_dir / "trials.csv", index=False)
    front = pareto_front(frame)
    records = [dict(number=int(r.number), seed=r.seed, layout=r.layout, params=int(r.params), flops=int(r.flops),
                    latency_ms=float(r.latency_ms), accuracy=float(r.accuracy), spec=json.loads(r.spec))
               for r in front.itertuples()]
    (run_dir / "pareto.json").write_text(json.dumps(records, indent=2))
    if html:
        write_pareto_html(frame, front, run_dir / "pareto.html", budget_flops)
    return frame

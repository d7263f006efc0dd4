"""The run directory's tables and plots, made from the Optuna study (the run's single record)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

__all__ = ["TRIAL_COLUMNS", "trials_frame", "pareto_mask", "pareto_front", "write_results"]

TRIAL_COLUMNS = ["number", "state", "seed", "layout", "params", "flops", "latency_ms", "accuracy", "duration_s",
                 "error", "spec"]


def _state(t: optuna.trial.FrozenTrial) -> str:
    if "rejected" in t.user_attrs:
        return "REJECTED"
    if "interrupted" in t.user_attrs:
        return "INTERRUPTED"
    if "skipped" in t.user_attrs:
        return "SKIPPED"
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


def write_results(study: optuna.Study, run_dir: Path, budget_flops: float | None = None,
                  html: bool = True, latency_budget_ms: float | None = None, fmt: str = "csv") -> pd.DataFrame:
    """Write trials.csv (or .parquet), pareto.json and (optionally) pareto.html; return the trials table."""
    from .report import front_records, write_report

    frame = trials_frame(study)
    if fmt == "parquet":
        frame.to_parquet(run_dir / "trials.parquet", index=False)
    else:
        frame.to_csv(run_dir / "trials.csv", index=False)
    front = pareto_front(frame)
    (run_dir / "pareto.json").write_text(json.dumps(front_records(front), indent=2))
    if html:
        write_report(frame, run_dir / "pareto.html", budget_flops, latency_budget_ms, front)
    return frame

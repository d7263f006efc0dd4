"""The run directory's tables and plots, made from the Optuna study (the run's single record).

Also the front's arithmetic that both the report and the search use (the search picks the members to
promote by it): exact hypervolume, each member's exclusive contribution, rank agreement between two
scorings of the same members. Promotion trials (`promotion_of` in their user attributes, see
`nas.search.run_promotions`) are rows of their own in trials.csv (state PROMOTION) and lend their
accuracy to the original's `promoted_accuracy`; they never enter the front.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

__all__ = ["TRIAL_COLUMNS", "trials_frame", "pareto_mask", "pareto_front", "write_results", "hypervolume",
           "normalised_objectives", "hypervolume_points", "exclusive_contributions", "hypervolume_contributions",
           "completed_rows", "rank_agreement", "promotion_summary", "HV_REFERENCE"]

# Columns of trials.csv, in order; new ones are appended at the end.
TRIAL_COLUMNS = ["number", "state", "seed", "layout", "params", "flops", "latency_ms", "accuracy", "duration_s",
                 "error", "spec", "promoted_accuracy", "promotion_of"]
HV_REFERENCE = np.array([1.0, 1.0, 1.0])  # the reference point of the normalised objectives


def _state(t: optuna.trial.FrozenTrial) -> str:
    if "rejected" in t.user_attrs:
        return "REJECTED"
    if "interrupted" in t.user_attrs:
        return "INTERRUPTED"
    if "skipped" in t.user_attrs:
        return "SKIPPED"
    if "promotion_of" in t.user_attrs and t.state == TrialState.COMPLETE:
        return "PROMOTION"
    return t.state.name


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial with the columns of `trials.csv` (numbers are NaN where not measured)."""
    rows: list[dict[str, Any]] = []
    promoted: dict[int, float] = {}  # original's number -> accuracy of its (latest) finished promotion
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        promotion_of = a.get("promotion_of")
        searched = t.state == TrialState.COMPLETE and "rejected" not in a and promotion_of is None
        if promotion_of is not None and t.state == TrialState.COMPLETE:
            promoted[int(promotion_of)] = a.get("accuracy")
        rows.append(dict(
            number=t.number, state=_state(t), seed=a.get("seed", ""), layout=a.get("layout", ""),
            params=a.get("params"), flops=a.get("flops"), latency_ms=a.get("latency_ms"),
            accuracy=t.values[0] if searched else a.get("accuracy"),
            duration_s=a.get("duration_s"), error=a.get("error") or a.get("rejected") or a.get("pruned") or "",
            spec=a.get("spec", ""), promoted_accuracy=None, promotion_of=promotion_of))
    frame = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    frame["promoted_accuracy"] = frame.number.map(promoted)
    for col in ("params", "flops", "promotion_of"):
        frame[col] = frame[col].astype("Int64")
    for col in ("latency_ms", "accuracy", "duration_s", "promoted_accuracy"):
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


def completed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The searched candidates trained to the end with all three numbers (what the front is made of):
    not pruned, failed, rejected, nor promotions."""
    return frame[frame.state == "COMPLETE"].dropna(subset=["accuracy", "flops", "latency_ms"])


def pareto_front(frame: pd.DataFrame) -> pd.DataFrame:
    """The non-dominated completed candidates (accuracy up, FLOPs and latency down)."""
    done = completed_rows(frame)
    if done.empty:
        return done
    mask = pareto_mask(done.accuracy.to_numpy(), done.flops.to_numpy(float), done.latency_ms.to_numpy())
    return done[mask].sort_values("flops")


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


def hypervolume_points(done: pd.DataFrame, budget: float) -> np.ndarray:
    """`done`'s (completed rows') objectives normalised as the report's hypervolume is: 1 - top-1, FLOPs
    over the budget, latency over 1.1 x the slowest completed trial; reference point `HV_REFERENCE`."""
    return normalised_objectives(done, budget, float(done.latency_ms.max()) * 1.1)


def exclusive_contributions(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per point, the hypervolume only it dominates: that of all points minus that of the others."""
    pts = np.asarray(points, float)
    total = hypervolume(pts, reference)
    return np.array([total - hypervolume(np.delete(pts, i, axis=0), reference) for i in range(len(pts))])


def hypervolume_contributions(frame: pd.DataFrame, budget: float) -> pd.Series:
    """Each front member's exclusive hypervolume contribution: the hypervolume of the front minus that
    of the front without it, with the report's normalisation (`hypervolume_points`). Indexed by trial
    number, largest first; ties by higher accuracy, then lower trial number."""
    done = completed_rows(frame)
    if done.empty:
        return pd.Series(dtype=float, name="contribution")
    mask = pareto_mask(done.accuracy.to_numpy(float), done.flops.to_numpy(float), done.latency_ms.to_numpy(float))
    front = done[mask]
    contribution = exclusive_contributions(hypervolume_points(done, budget)[mask], HV_REFERENCE)
    order = sorted(range(len(front)), key=lambda i: (-round(contribution[i], 12), -front.accuracy.iloc[i],
                                                     front.number.iloc[i]))
    return pd.Series([contribution[i] for i in order], index=[int(front.number.iloc[i]) for i in order],
                     name="contribution")


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):  # ties share their mean rank
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def rank_agreement(first: np.ndarray, second: np.ndarray) -> dict[str, Any]:
    """Spearman's rho and Kendall's tau-b between two scorings of the same items (None where undefined,
    with a note saying why)."""
    a, b = np.asarray(first, float), np.asarray(second, float)
    n = len(a)
    result: dict[str, Any] = dict(n=n, spearman=None, kendall=None, note="")
    if n < 2:
        result["note"] = f"rank agreement needs at least 2 promoted members, {n} so far"
        return result
    if np.all(a == a[0]) or np.all(b == b[0]):
        result["note"] = "one of the two scorings is the same for every member: no ranking to compare"
        return result
    ra, rb = _average_ranks(a), _average_ranks(b)
    i, j = np.triu_indices(n, 1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    for name, value in (("spearman", np.corrcoef(ra, rb)[0, 1]),
                        ("kendall", (da * db).sum() / math.sqrt((da != 0).sum() * (db != 0).sum()))):
        result[name] = float(np.clip(round(float(value), 12), -1.0, 1.0))  # 1.0, not 0.9999999999999999
    if n == 2:
        result["note"] = ("2 members: both coefficients are +1 (the promotion kept their order) or -1 (it swapped "
                          "them), not an estimate of agreement")
    elif n < 5:
        result["note"] = f"only {n} members: a coarse indication"
    return result


def promotion_summary(frame: pd.DataFrame, fidelity: dict | None = None) -> dict[str, Any]:
    """What the promotions say about the proxy: per promoted trial its proxy and promoted top-1, and the
    rank agreement between the two over those trials; `fidelity` is the promotions' (recorded as is)."""
    promoted = frame[frame.promoted_accuracy.notna()].sort_values("number")
    members = [dict(number=int(r.number), seed=r.seed if isinstance(r.seed, str) else "", layout=r.layout,
                    proxy_accuracy=float(r.accuracy), promoted_accuracy=float(r.promoted_accuracy))
               for r in promoted.itertuples()]
    runs = frame[frame.promotion_of.notna()]
    return dict(members=members, promotions_run=int((runs.state == "PROMOTION").sum()),
                promotions_failed=int((runs.state == "FAIL").sum()), fidelity=fidelity,
                **rank_agreement(promoted.accuracy.to_numpy(float), promoted.promoted_accuracy.to_numpy(float)))


def promotion_fidelity(study: optuna.Study) -> dict | None:
    """The fidelity the run's promotions trained at (the latest recorded), None without promotions."""
    return next((t.user_attrs["fidelity"] for t in reversed(study.get_trials(deepcopy=False))
                 if "promotion_of" in t.user_attrs and "fidelity" in t.user_attrs), None)


def front_records(front: pd.DataFrame) -> list[dict]:
    """pareto.json's records: the non-dominated specs (rows of `pareto_front`) with their numbers;
    `promoted_accuracy` is the top-1 of the member's promotion (null where it was not promoted)."""
    promoted = front.promoted_accuracy if "promoted_accuracy" in front else pd.Series(float("nan"), front.index)
    return [dict(number=int(r.number), seed=r.seed if isinstance(r.seed, str) else "", layout=r.layout,
                 params=int(r.params), flops=int(r.flops), latency_ms=float(r.latency_ms),
                 accuracy=float(r.accuracy), promoted_accuracy=None if pd.isna(p) else float(p),
                 spec=json.loads(r.spec)) for r, p in zip(front.itertuples(), promoted)]


def write_results(study: optuna.Study, run_dir: Path, fmt: str = "csv") -> pd.DataFrame:
    """Write the run's tables: trials.csv (or .parquet), pareto.json and, after promotions,
    promotion.json; return the trials table. The report (pareto.html) is `nas.report.write_run`'s."""
    frame = trials_frame(study)
    if fmt == "parquet":
        frame.to_parquet(run_dir / "trials.parquet", index=False)
    else:
        frame.to_csv(run_dir / "trials.csv", index=False)
    (run_dir / "pareto.json").write_text(json.dumps(front_records(pareto_front(frame)), indent=2))
    summary = promotion_summary(frame, promotion_fidelity(study))
    if summary["members"] or summary["promotions_failed"]:
        (run_dir / "promotion.json").write_text(json.dumps(summary, indent=2))
    return frame

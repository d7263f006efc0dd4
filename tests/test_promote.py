"""Promotions: which front members, how they are recorded apart from the search, what a promotion trains.

In-process and fast; the real search with a kill during its promotions is in test_search.py.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

import nas
from nas.report import write_run
from nas.results import (
    TRIAL_COLUMNS,
    exclusive_contributions,
    hypervolume,
    hypervolume_contributions,
    pareto_front,
    rank_agreement,
    trials_frame,
)
from nas.search import (
    SearchConfig,
    completed_trials,
    open_study,
    pending_promotions,
    promotion_choice,
    reconcile,
    record_promotion_end,
    record_promotion_start,
)
from search_spaces import SEEDS
from search_spaces.scaling import scale_spec
from trials.data import default_samples, make_synthetic
from trials.fidelity import PROMOTION, PROXY, Fidelity
from trials.train import ProxyConfig, train_and_evaluate
from trials.trial import TrialSettings, run_promotion

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 1e9


def _row(number, accuracy, flops, latency, state="COMPLETE", **extra):
    return dict(number=number, state=state, seed="", layout="L-L-L-L", params=1, flops=flops, latency_ms=latency,
                accuracy=accuracy, duration_s=1.0, error="", spec=SEEDS["van_b0"].to_json(), **extra)


def _staircase() -> pd.DataFrame:
    """Three front members on a 2-D staircase (equal latencies), a dominated trial, and rows that must not
    count: a pruned, a rejected and a promotion row that would dominate everything."""
    return pd.DataFrame([
        _row(0, 80.0, 0.6e9, 10.0),  # normalised (0.2, 0.6)
        _row(1, 60.0, 0.4e9, 10.0),  # (0.4, 0.4)
        _row(2, 40.0, 0.2e9, 10.0),  # (0.6, 0.2)
        _row(3, 50.0, 0.5e9, 10.0),  # dominated by trial 1
        _row(4, 99.0, 0.1e9, 1.0, state="PRUNED"),
        _row(5, 0.0, 2.0e9, 1e9, state="REJECTED"),
        _row(6, 99.0, 0.1e9, 1.0, state="PROMOTION"),
    ])


def test_contributions_of_a_2d_staircase_by_hand():
    # 2-D exclusive areas with reference (1, 1): trial 0 [0.2, 0.4] x [0.6, 1] = 0.08, trial 1
    # [0.4, 0.6] x [0.4, 0.6] = 0.04, trial 2 [0.6, 1] x [0.2, 0.4] = 0.08; union 0.52. Every latency is the
    # slowest completed trial's, normalised to 1 / 1.1: each area is a slab 1 - 1/1.1 deep.
    depth = 1 - 1 / 1.1
    contributions = hypervolume_contributions(_staircase(), BUDGET)
    assert list(contributions.index) == [0, 2, 1]  # 0 and 2 tie: the more accurate first
    assert contributions.to_numpy() == pytest.approx(np.array([0.08, 0.08, 0.04]) * depth)
    front = pareto_front(_staircase())
    assert sorted(front.number) == [0, 1, 2]
    points = np.array([[0.2, 0.6, 1 / 1.1], [0.4, 0.4, 1 / 1.1], [0.6, 0.2, 1 / 1.1]])
    assert hypervolume(points, np.ones(3)) == pytest.approx(0.52 * depth)

    assert promotion_choice(_staircase(), BUDGET, 2) == [0, 2]
    assert promotion_choice(_staircase(), BUDGET, 5) == [0, 2, 1]  # a front smaller than K: all of it
    assert promotion_choice(_staircase(), BUDGET, 0) == []
    assert promotion_choice(_staircase()[lambda f: f.state != "COMPLETE"], BUDGET, 2) == []


def test_exclusive_contributions_3d_by_inclusion_exclusion():
    points = np.array([[0.2, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])
    # boxes up to (1, 1, 1): 0.4, 0.25, 0.25; pairwise overlaps 0.2, 0.125, 0.125; all three 0.125
    union = 0.4 + 0.25 + 0.25 - 0.2 - 0.125 - 0.125 + 0.125
    assert hypervolume(points, np.ones(3)) == pytest.approx(union)
    expected = [union - (0.25 + 0.25 - 0.125), union - (0.4 + 0.25 - 0.125), union - (0.4 + 0.25 - 0.2)]
    assert exclusive_contributions(points, np.ones(3)) == pytest.approx(expected)  # 0.2, 0.05, 0.125


def test_rank_agreement_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for n in (3, 5, 9):
        a, b = rng.integers(0, 6, n).astype(float), rng.integers(0, 6, n).astype(float)  # ties included
        if len(set(a)) < 2 or len(set(b)) < 2:
            continue
        got = rank_agreement(a, b)
        assert got["spearman"] == pytest.approx(stats.spearmanr(a, b).statistic)
        assert got["kendall"] == pytest.approx(stats.kendalltau(a, b).statistic)  # tau-b
    two = rank_agreement([50.0, 60.0], [70.0, 65.0])
    assert two["spearman"] == -1.0 and two["kendall"] == -1.0 and "+1" in two["note"]
    assert rank_agreement([50.0], [70.0])["spearman"] is None
    assert rank_agreement([50.0, 50.0, 50.0], [1.0, 2.0, 3.0])["kendall"] is None


def _search_trial(study: optuna.Study, x: float, values: list[float], seed: str = "") -> None:
    attrs = dict(seed=seed, layout="L-L-L-L", params=1000, flops=int(values[1]), latency_ms=values[2],
                 duration_s=1.0, spec=SEEDS["van_b0"].to_json())
    study.add_trial(optuna.trial.create_trial(values=values, params={"x": x},
                                              distributions={"x": FloatDistribution(0, 1)}, user_attrs=attrs,
                                              constraints={"flops_over_budget": values[1] - BUDGET}))


def _study(tmp_path: Path) -> optuna.Study:
    study = open_study(tmp_path)
    _search_trial(study, 0.1, [80.0, 0.6e9, 10.0], seed="van_b0")
    _search_trial(study, 0.2, [60.0, 0.4e9, 10.0])
    _search_trial(study, 0.3, [40.0, 0.2e9, 10.0])
    _search_trial(study, 0.4, [50.0, 0.5e9, 10.0])  # dominated
    return study


def test_promotions_are_recorded_apart_from_the_search(tmp_path):
    study = _study(tmp_path)
    fidelity = PROMOTION.above(SearchConfig(budget_flops=BUDGET, out=tmp_path).proxy_fidelity())
    assert pending_promotions(study, BUDGET, 2) == [0, 2]
    originals = {t.number: t for t in study.trials}

    first = record_promotion_start(study, originals[0], fidelity)
    second = record_promotion_start(study, originals[2], fidelity)
    assert study.trials[first].state == TrialState.RUNNING and study.trials[first].params == originals[0].params
    record_promotion_end(study, first, originals[0], dict(accuracy=91.5, val_top1=[70.0, 91.5], epochs=2,
                                                          images=6000, duration_s=3.0, cpu_s=2.9))
    record_promotion_end(study, second, originals[2], error="OutOfMemoryError: no memory")

    promoted = study.trials[first]
    assert promoted.state == TrialState.COMPLETE and promoted.values == originals[0].values  # the sampler sees a copy
    assert promoted.constraints == originals[0].constraints
    assert promoted.user_attrs["promotion_of"] == 0 and promoted.user_attrs["accuracy"] == 91.5
    assert promoted.user_attrs["fidelity"]["width"] == 1.0 and promoted.user_attrs["fidelity"]["max_depth"] is None
    assert [t.number for t in completed_trials(study)] == [0, 1, 2, 3]  # --trials does not count them
    assert pending_promotions(study, BUDGET, 2) == []  # a failed promotion is finished: not rerun
    assert pending_promotions(study, BUDGET, 3) == [1]

    frame = write_run(study, tmp_path, BUDGET)
    table = pd.read_csv(tmp_path / "trials.csv")
    assert list(table.columns) == TRIAL_COLUMNS
    assert list(table.state) == ["COMPLETE"] * 4 + ["PROMOTION", "FAIL"]
    assert table.promoted_accuracy.tolist()[:4] == pytest.approx([91.5, math.nan, math.nan, math.nan], nan_ok=True)
    assert table.promotion_of.tolist()[4:] == [0, 2] and table.promotion_of.iloc[:4].isna().all()
    assert table.accuracy.iloc[4] == 91.5 and table.flops.iloc[4] == 0.6e9  # its own top-1, the original's costs
    assert "promotion of trial 2 failed: OutOfMemoryError" in table.error.iloc[5]
    assert sorted(pareto_front(frame).number) == [0, 1, 2]  # promotions never on the front

    records = {r["number"]: r for r in json.loads((tmp_path / "pareto.json").read_text())}
    assert set(records) == {0, 1, 2}
    assert records[0]["promoted_accuracy"] == 91.5 and records[1]["promoted_accuracy"] is None
    summary = json.loads((tmp_path / "promotion.json").read_text())
    assert summary["members"] == [dict(number=0, seed="van_b0", layout="L-L-L-L", proxy_accuracy=80.0,
                                       promoted_accuracy=91.5)]
    assert summary["promotions_failed"] == 1 and summary["spearman"] is None and "at least 2" in summary["note"]
    assert summary["fidelity"]["train_images"] == 2 * default_samples("synthetic")[0]
    page = (tmp_path / "pareto.html").read_text()
    assert "promoted top-1 (%)" in page and "trial 0 80.0% -&gt; 91.5%" in page and 'data-points="4"' in page


def test_reconcile_fails_a_killed_promotion_and_does_not_queue_it(tmp_path):
    study = _study(tmp_path)
    fidelity = PROMOTION.above(SearchConfig(budget_flops=BUDGET, out=tmp_path).proxy_fidelity())
    originals = {t.number: t for t in study.trials}
    done = record_promotion_start(study, originals[0], fidelity)
    record_promotion_end(study, done, originals[0], dict(accuracy=85.0))
    killed = record_promotion_start(study, originals[2], fidelity)
    searching = study.ask({"x": FloatDistribution(0, 1)})  # a search trial the kill left RUNNING too
    assert reconcile(study) == (1, 1)
    assert study.trials[killed].state == TrialState.FAIL and "runs again" in study.trials[killed].user_attrs[
        "interrupted"]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    # only the search trial is queued again
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"x": searching.params["x"]}]
    assert pending_promotions(study, BUDGET, 2) == [2]  # the interrupted promotion runs again, the finished one not
    assert trials_frame(study).set_index("number").loc[killed, "state"] == "INTERRUPTED"


def test_run_promotion_trains_the_full_model_as_train_and_evaluate_does():
    spec = scale_spec(SEEDS["van_b0"], width=0.25, max_depth=1, multiple=16)  # small enough to train in seconds
    data = make_synthetic(192, 64, img_size=32, seed=1)
    fidelity = PROMOTION.with_(train_images=192, val_images=64, epochs=2)
    result = run_promotion(spec, data, fidelity, seed=5, threads=1)

    torch.manual_seed(5)
    model = nas.build_model(spec, num_classes=data.num_classes, img_size=32)  # the full spec, unscaled
    expected = train_and_evaluate(model, data, ProxyConfig(epochs=2, batch_size=64, lr=2e-3, warmup_epochs=0.2,
                                                           seed=5, num_threads=1))
    assert result["val_top1"] == expected.val_top1 and result["accuracy"] == expected.final_top1
    assert result["epochs"] == 2 and result["images"] == 192 and result["cpu_s"] > 0


def test_promotion_fidelity_is_above_the_proxy():
    assert PROMOTION.full_size and PROMOTION.train_factor == 2.0 and PROMOTION.img_size == PROXY.img_size
    cfg = SearchConfig(budget_flops=BUDGET, out=Path("."))
    promotion = cfg.promotion_fidelity()
    assert (promotion.train_images, promotion.val_images) == (2 * cfg.proxy_train, cfg.proxy_val)
    assert promotion.epochs * promotion.train_images >= cfg.proxy_epochs * cfg.proxy_train
    long_proxy = SearchConfig(budget_flops=BUDGET, out=Path("."), proxy_epochs=10, proxy_img_size=64).promotion_fidelity()
    assert long_proxy.epochs == 5 and long_proxy.img_size == 64  # never fewer images seen, never a smaller image
    assert Fidelity(train_images=500).sample_sizes(3000, 1000) == (500, 1000)
    assert PROXY.default_sample("fashion-mnist") == default_samples("fashion-mnist")


def test_old_config_json_loads(tmp_path):
    """A run saved before promotions (and before proxy_batch / proxy_warmup) resumes without promotions."""
    old = dict(budget_flops=5e9, out=str(tmp_path), trials=24, workers=2, sampler="tpe", seed=0, sampler_seed=None,
               latency_budget_ms=None, latency_device="cpu", latency_threads=1, dataset="synthetic", data_dir=None,
               proxy_img_size=32, proxy_epochs=4, proxy_lr=2e-3, proxy_train=3000, proxy_val=1000, proxy_width=0.5,
               proxy_depth=2, min_per_class=30, grace_epochs=2, ray_address=None, cpus_per_trial=None,
               seeds=["van_b0"], resume=False)
    (tmp_path / "config.json").write_text(json.dumps(old))
    cfg = SearchConfig.load(tmp_path / "config.json")
    assert cfg.promote == 0 and cfg.proxy_batch == PROXY.batch_size and cfg.promotion_fidelity().train_images == 6000
    cfg.save(tmp_path / "again.json")
    assert SearchConfig.load(tmp_path / "again.json") == cfg


def test_proxy_settings_come_from_one_place(tmp_path):
    """Change PROXY before the search is imported: the configuration, the command's defaults and help, the trial
    and the promotion follow."""
    code = f"""
import trials.fidelity as f
f.PROXY = f.Fidelity(width=0.25, max_depth=1, img_size=64, epochs=7, lr=1e-3, batch_size=32)
from nas.cli import parse_search_args, search_parser
from trials.trial import TrialSettings
cfg = parse_search_args(["--budget", "1G", "--out", {str(tmp_path / 'run')!r}])
print(cfg.proxy_width, cfg.proxy_depth, cfg.proxy_img_size, cfg.proxy_epochs, cfg.proxy_lr, cfg.proxy_batch,
      cfg.proxy_train, cfg.promote)
print(cfg.proxy_fidelity() == f.PROXY.with_(train_images=3000, val_images=1000))
print(TrialSettings().proxy.epochs, TrialSettings().proxy.batch_size, TrialSettings().fidelity.width)
print(search_parser().format_help().replace(chr(10), " "))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "0.25 1 64 7 0.001 32 3000 2" and lines[1] == "True" and lines[2] == "7 32 0.25"
    helptext = " ".join(lines[3].split())
    assert "epochs (default 7)" in helptext and "image side in pixels (default 64)" in helptext
    assert ProxyConfig().epochs == PROXY.epochs and ProxyConfig().lr == PROXY.lr  # trials.train reads PROXY too
    assert TrialSettings().fidelity == PROXY

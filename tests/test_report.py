"""The Pareto report: exact hypervolume, the front, the page a browser opens."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nas.report import hypervolume_history, write_report
from nas.results import hypervolume, pareto_mask
from search_spaces import SEEDS

ROOT = Path(__file__).resolve().parents[1]


def test_hypervolume_known_cases():
    ref = np.array([1.0, 1.0, 1.0])
    assert hypervolume(np.array([[0.5, 0.5, 0.5]]), ref) == pytest.approx(0.125)
    # two boxes overlapping in [0.5,1]^3: 0.5*0.5*1 + 1*0.5*0.5 - 0.5^3 by inclusion-exclusion
    two = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    assert hypervolume(two, ref) == pytest.approx(0.25 + 0.25 - 0.125)
    assert hypervolume(np.array([[1.5, 0.1, 0.1]]), ref) == 0.0  # outside the reference box


def test_hypervolume_matches_monte_carlo():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 1, (12, 3))
    samples = rng.uniform(0, 1, (200_000, 3))
    dominated = np.zeros(len(samples), bool)
    for p in points:
        dominated |= np.all(samples >= p, axis=1)
    assert hypervolume(points, np.ones(3)) == pytest.approx(dominated.mean(), abs=0.005)


def test_pareto_mask_by_brute_force():
    rng = np.random.default_rng(1)
    acc, flops, lat = rng.uniform(0, 100, 30), rng.uniform(0, 5, 30), rng.uniform(1, 50, 30)
    mask = pareto_mask(acc, flops, lat)
    for i in range(30):
        dominated = any(acc[j] >= acc[i] and flops[j] <= flops[i] and lat[j] <= lat[i]
                        and (acc[j] > acc[i] or flops[j] < flops[i] or lat[j] < lat[i]) for j in range(30))
        assert mask[i] == (not dominated)


def _frame(n: int = 14) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    names = list(SEEDS)
    rows = []
    for i in range(n):
        spec = SEEDS[names[i % len(names)]]
        rows.append(dict(number=i, state="COMPLETE" if i % 5 else "PRUNED", seed=names[i] if i < 3 else "",
                         layout=spec.layout, params=int(rng.integers(1e6, 3e7)), flops=int(rng.integers(1e8, 5e9)),
                         latency_ms=float(rng.uniform(5, 80)), accuracy=float(rng.uniform(10, 70)), duration_s=1.0,
                         error="", spec=spec.to_json()))
    return pd.DataFrame(rows)


def test_hypervolume_history_never_decreases():
    history = hypervolume_history(_frame(), 5e9)
    assert (np.diff(history.hypervolume) >= -1e-12).all() and history.hypervolume.iloc[-1] > 0


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-headless-shell")),
                    reason="needs Chromium (apt-get install chromium); .ci/run installs it")
def test_pareto_page_renders_every_point_in_headless_chromium(tmp_path):
    frame = _frame()
    page = write_report(frame, tmp_path / "pareto.html", budget=5e9)
    assert "cdn.plot.ly" not in page.read_text()[:5000]  # plotly.js is inlined: opens offline
    browser = shutil.which("chromium") or shutil.which("chromium-headless-shell")
    probe = tmp_path / "probe.html"
    # load the page, then print how many points its first figure holds, as the browser sees them
    probe.write_text(page.read_text().replace("</body>", """<script>
window.addEventListener('load', () => setTimeout(() => {
  const gd = document.getElementById('figure-0');
  const n = gd._fullData.filter(t => t.mode === 'markers').reduce((a, t) => a + t._length, 0);
  const dots = gd.querySelectorAll('.scatterlayer .point').length;
  document.title = JSON.stringify({n: n, dots: dots});
}, 500));
</script></body>"""))
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                             "--no-first-run", "--disable-component-update", "--disable-sync",
                             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
                             probe.as_uri()], capture_output=True, text=True, timeout=120)
    title = result.stdout.split("<title>")[1].split("</title>")[0]
    seen = json.loads(title)
    points = int(frame.state.isin(["COMPLETE", "PRUNED"]).sum())
    assert seen["n"] == 2 * points  # each point in both plots
    assert seen["dots"] == 2 * points  # and drawn as SVG points


def test_plot_script_regenerates_a_run(tmp_path):
    import optuna

    from nas.search import open_study

    plot = [sys.executable, str(ROOT / "scripts" / "plot.py"), str(tmp_path)]
    result = subprocess.run(plot, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no study.db" in result.stderr
    study = open_study(tmp_path)  # a real study storage, filled as the searcher fills it
    for r in _frame(6).itertuples():
        attrs = dict(seed=r.seed, layout=r.layout, params=r.params, flops=r.flops, latency_ms=r.latency_ms,
                     duration_s=r.duration_s, spec=r.spec)
        if r.state == "COMPLETE":
            trial = optuna.trial.create_trial(values=[r.accuracy, r.flops, r.latency_ms], user_attrs=attrs)
        else:
            trial = optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs=attrs)
        study.add_trial(trial)
    result = subprocess.run(plot, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_csv(tmp_path / "trials.csv")
    assert list(table.state) == ["PRUNED"] + ["COMPLETE"] * 4 + ["PRUNED"]
    front = json.loads((tmp_path / "pareto.json").read_text())
    complete = table[table.state == "COMPLETE"]
    mask = pareto_mask(complete.accuracy.to_numpy(), complete.flops.to_numpy(float), complete.latency_ms.to_numpy())
    assert sorted(r["number"] for r in front) == sorted(complete.number[mask])
    assert 'data-points="6"' in (tmp_path / "pareto.html").read_text()


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-headless-shell")),
                    reason="needs Chromium (apt-get install chromium); .ci/run installs it")
def test_static_png_of_the_main_plot(tmp_path):
    from nas.report import write_png

    path = write_png(_frame(), tmp_path / "pareto.png", 5e9)
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000


def test_promoted_members_are_drawn_beside_their_proxy():
    from nas.report import _figures, promotion_text
    from nas.results import pareto_front, promotion_summary

    frame = _frame()
    frame["promotion_of"] = pd.array([pd.NA] * len(frame), dtype="Int64")
    frame["promoted_accuracy"] = np.nan
    promoted = {1: 75.5, 2: 12.25}  # two completed trials
    for number, accuracy in promoted.items():
        frame.loc[frame.number == number, "promoted_accuracy"] = accuracy
    summary = promotion_summary(frame)
    assert [m["number"] for m in summary["members"]] == [1, 2] and summary["n"] == 2
    main, _, table = _figures(frame, pareto_front(frame), 5e9, None, summary)
    diamonds = [t for t in main.data if t.marker is not None and t.marker.symbol == "diamond"]
    assert len(diamonds) == 2  # one per plot
    rows = frame.set_index("number").loc[[1, 2]]
    assert list(diamonds[0].y) == [75.5, 12.25] and list(diamonds[0].x) == pytest.approx(rows.flops / 1e9)
    assert list(diamonds[1].x) == pytest.approx(rows.latency_ms)
    connectors = [t for t in main.data if t.mode == "lines" and t.line.dash == "dot"]
    assert len(connectors) == 2 and list(connectors[0].y) == [rows.accuracy[1], 75.5, None, rows.accuracy[2], 12.25, None]
    assert "promoted top-1 (%)" in table.data[0].header.values
    text = promotion_text(summary)
    assert "Spearman" in text and "2 members" in text and f"trial 1 {rows.accuracy[1]:.1f}% -> 75.5%" in text

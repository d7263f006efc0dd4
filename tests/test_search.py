"""The search command end to end, small: real Optuna study, real Ray Tune trials, real training."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

import nas
from nas.results import TRIAL_COLUMNS
from search_spaces import SEEDS, ArchSpec

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--budget", "1gflops", "--workers", "2", "--proxy-epochs", "2", "--proxy-train", "200",
         "--proxy-val", "100", "--proxy-img-size", "32"]


def search(*args: str, timeout: int = 240, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "search.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT)


def load(run: Path) -> optuna.Study:
    return optuna.load_study(study_name="hybrid-nas", storage=f"sqlite:///{run / 'study.db'}")


@pytest.mark.parametrize("args, message", [
    (["--budget", "abc"], "invalid FLOP budget 'abc'"),
    (["--budget", "5G", "--workers", "0"], "--workers: must be >= 1"),
    (["--budget", "5G", "--dataset", "imagefolder", "--data-dir", "/no/such/dir"], "does not exist"),
    (["--budget", "5G", "--dataset", "cifar10"], "needs --data-dir"),
    (["--budget", "5G", "--out", "/proc/hybrid-nas-run"], "cannot write"),
    (["--budget", "5G", "--latency-budget", "soon"], "invalid latency budget"),
    (["--budget", "10mflops"], "the smallest architecture of the search space needs 20.3 MFLOPs"),
    (["--budget", "1G", "--dataset", "fashion-mnist", "--data-dir", "/no/such/dir"], "dataset-fashion-mnist"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = search(*args, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_empty_or_unreadable_image_folder_is_one_line_and_exit_2(tmp_path):
    from PIL import Image

    (tmp_path / "empty" / "cat").mkdir(parents=True)
    result = search("--budget", "1G", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "empty"),
                    "--out", str(tmp_path / "run1"), timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "no images found" in lines[0], result.stderr
    for cls in ("cat", "dog"):
        (tmp_path / "bad" / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "bad" / cls / f"{i}.png")
    (tmp_path / "bad" / "dog" / "broken.png").write_bytes(b"not a png")
    result = search("--budget", "1G", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "bad"),
                    "--out", str(tmp_path / "run2"), timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "broken.png" in lines[0], result.stderr


def test_existing_run_directory_is_left_intact(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "trials.csv").write_text("precious")
    result = search("--budget", "5G", "--out", str(run), timeout=60)
    assert result.returncode == 2 and "--resume" in result.stderr
    assert (run / "trials.csv").read_text() == "precious" and len(list(run.iterdir())) == 1
    result = search("--budget", "5G", "--resume", str(tmp_path / "nothing"), timeout=60)
    assert result.returncode == 2 and "no study.db" in result.stderr


def test_small_search_writes_the_run_directory(tmp_path):
    run = tmp_path / "run"
    result = search(*SMALL, "--trials", "3", "--seeds", "van_b0,smt_t", "--out", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "seed scaled to fit the budget: smt_t" in result.stderr  # 2.46 G over a 1 G budget
    assert "trials: 3/3 complete" in result.stderr
    for name in ("study.db", "trials.csv", "pareto.json", "pareto.html", "search.log"):
        assert (run / name).is_file(), name

    frame = pd.read_csv(run / "trials.csv")
    assert list(frame.columns) == TRIAL_COLUMNS
    assert (frame.state == "COMPLETE").sum() >= 3
    assert set(frame.seed.dropna()) == {"van_b0", "smt_t"}
    seeds = frame[frame.seed.notna()].set_index("seed")
    assert seeds.loc["van_b0", "flops"] == 864_224_000 and seeds.loc["van_b0", "layout"] == "L-L-L-L"
    for row in frame.itertuples():
        spec = ArchSpec.from_json(row.spec)  # every row carries its full spec
        assert nas.count(spec).flops == row.flops
        if row.state == "REJECTED":
            assert row.flops > 1e9  # rejected only for the budget, never trained
            assert pd.isna(row.accuracy)
    complete = frame[frame.state == "COMPLETE"]
    assert (complete.flops <= 1e9).all() and (complete.latency_ms > 0).all()
    assert complete.accuracy.between(0, 100).all() and (complete.duration_s > 0).all()

    front = json.loads((run / "pareto.json").read_text())
    assert front and {r["number"] for r in front} <= set(complete.number)
    for a in front:  # no point of the front is dominated by a completed trial
        for b in complete.itertuples():
            better = (b.accuracy >= a["accuracy"] and b.flops <= a["flops"] and b.latency_ms <= a["latency_ms"])
            strictly = (b.accuracy > a["accuracy"] or b.flops < a["flops"] or b.latency_ms < a["latency_ms"])
            assert not (better and strictly)
    study = load(run)  # the storage opens as a plain Optuna study (what optuna-dashboard reads)
    assert len(study.directions) == 3 and len(study.trials) == len(frame)
    assert json.loads((run / "config.json").read_text())["latency_threads"] == 1  # not cores / workers


def test_mobile_budget_runs_with_every_default_seed(tmp_path):
    """300 MFLOPs: every seed scaled into it, twins merged into one trial, nothing completed over budget."""
    run = tmp_path / "run"
    result = search(*SMALL, "--budget", "300mflops", "--proxy-epochs", "1", "--trials", "8", "--out", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "seeds van_b1, van_b2, van_b3 scale to the same spec under the budget: one trial" in result.stderr
    frame = pd.read_csv(run / "trials.csv")
    complete = frame[frame.state == "COMPLETE"]
    assert len(complete) >= 8 and (complete.flops <= 3e8).all()
    assert complete.spec.map(lambda s: ArchSpec.from_json(s).replace(name="").to_json()).is_unique
    # 13 seeds, 6 distinct specs at 0.3 G: each name kept in the trial it shares
    assert sorted(n for s in frame.seed.dropna() for n in s.split("+")) == sorted(SEEDS)
    assert "pelk_t+pelk_s+pelk_b" in set(frame.seed.dropna())


def test_failed_trials_are_recorded_and_the_search_goes_on(tmp_path):
    """With a latency budget too: a crashed trial has no latency, which must not end the search."""
    run = tmp_path / "run"
    result = search(*SMALL, "--trials", "1", "--seeds", "van_b0", "--proxy-lr", "1e12", "--latency-budget", "60s",
                    "--out", str(run))
    assert result.returncode == 1 and "0 of 1 trials completed" in result.stderr.strip().splitlines()[-1]
    frame = pd.read_csv(run / "trials.csv")
    failed = frame[frame.state == "FAIL"]
    assert len(failed) >= 3  # after the first failure the search went on
    assert failed.error.str.contains("loss became nan").all()  # the divergence is named


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _completed(run: Path) -> list[int]:
    try:
        return [t.number for t in load(run).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
                if "rejected" not in t.user_attrs]
    except Exception:
        return []


def test_resume_after_kill_9(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "scripts" / "search.py"), *SMALL, "--trials", "4", "--seeds", "van_b0,smt_t",
           "--out", str(run)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait_for(lambda: len(_completed(run)) >= 1, 180, "a first completed trial")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {t.number: (t.values, t.user_attrs.get("duration_s")) for t in load(run).trials
              if t.state == optuna.trial.TrialState.COMPLETE and "rejected" not in t.user_attrs}
    result = search("--trials", "4", "--resume", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    study = load(run)
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    after = {t.number: (t.values, t.user_attrs.get("duration_s")) for t in study.trials}
    assert all(after[n] == v for n, v in before.items())  # completed trials kept, not re-run
    frame = pd.read_csv(run / "trials.csv")
    assert (frame.state == "COMPLETE").sum() >= 4
    assert set(frame[frame.state == "COMPLETE"].seed.dropna()) == {"van_b0", "smt_t"}  # seeds are never pruned


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_ray_cluster(tmp_path):
    """A head and a worker node on loopback (Ray's own CLI); trials land on both."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    port = _free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen([ray, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                             "--block"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nodes = [head]
    try:
        time.sleep(6)
        nodes.append(subprocess.Popen([ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--block"],
                                      env=env, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_for(lambda: "2 node" in subprocess.run(
            [sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{port}', logging_level='ERROR'); "
             "print(len([n for n in ray.nodes() if n['Alive']]), 'node')"],
            capture_output=True, text=True, env=env).stdout, 90, "the worker node to join")
        run = tmp_path / "run"
        # trials long enough to overlap, so that the two 1-CPU nodes both get work
        result = search(*SMALL, "--proxy-epochs", "3", "--proxy-train", "600", "--trials", "6", "--seeds", "none",
                        "--cpus-per-trial", "1", "--ray-address",
                        f"127.0.0.1:{port}", "--out", str(run), env={"RAY_AUTH_MODE": "disabled"})
        assert result.returncode == 0, result.stderr[-3000:]
        nodes_used = {t.user_attrs.get("node") for t in load(run).trials if "node" in t.user_attrs}
        assert len(nodes_used) == 2
    finally:
        for p in nodes:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()

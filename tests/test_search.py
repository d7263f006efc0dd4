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
from nas.search import promotion_choice
from search_spaces import SEEDS, ArchSpec
from trials.devices import cuda_device_count

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--budget", "1gflops", "--workers", "2", "--proxy-epochs", "2", "--proxy-train", "200",
         "--proxy-val", "100", "--proxy-img-size", "32", "--promote", "0"]
# promotions of tiny models: 100 MFLOPs, proxy 1 epoch on 200 images, promotions 2 epochs on 400
PROMOTE = ["--budget", "100mflops", "--proxy-epochs", "1", "--proxy-train", "200", "--proxy-val", "100",
           "--promote", "2"]


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
    (["--budget", "1G", "--gpus-per-trial", "0"], "--gpus-per-trial: must be > 0"),
    (["--budget", "1G", "--device", "cpu", "--gpus-per-trial", "0.5"], "--gpus-per-trial needs --device cuda"),
    pytest.param(["--budget", "1G", "--device", "cuda"], "no CUDA GPU here",
                 marks=pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a GPU")),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = search(*args, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


@pytest.mark.parametrize("args", [["--help"], ["--budget", "abc"], ["--budget", "10mflops"],
                                  ["--budget", "1G", "--dataset", "cifar10"], ["--budget", "1G", "--out", "/proc/x"]])
def test_help_and_bad_input_import_no_torch_ray_or_optuna(args):
    """What makes the command answer at once (benchmarks/cli_speed.py times it): nothing heavy is imported
    before the input is known to be good."""
    code = ("import sys\nfrom nas.cli import search_main\ntry:\n    code = search_main(sys.argv[1:])\n"
            "except SystemExit as stop:\n    code = stop.code\n"
            "print(code, sorted({'torch', 'timm', 'ray', 'optuna', 'pandas'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                            timeout=60)
    assert result.stdout.strip().splitlines()[-1] == f"{0 if args == ['--help'] else 2} []", result.stderr


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


def test_search_with_a_latency_table_rejects_by_latency_before_training(tmp_path):
    """A table where every part costs 1 ms: a model's latency is its number of parts, countable from its spec
    alone. Latencies come from the table (no full-size model is timed), and the latency budget rejects
    before training, as the FLOP budget does."""
    from test_latency_table import parts_table

    parts_table().save(tmp_path / "table.json")
    run = tmp_path / "run"
    result = search(*SMALL, "--trials", "3", "--seeds", "van_b0,smt_t,coatnet_0", "--latency-budget", "17ms",
                    "--latency-table", str(tmp_path / "table.json"), "--out", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    frame = pd.read_csv(run / "trials.csv")
    n_parts = {}
    for row in frame.itertuples():
        spec = ArchSpec.from_json(row.spec)
        stages = spec.stages
        n_parts[row.number] = (1 + sum(s.downsample in ("overlap", "patch") for s in stages)
                               + sum(s.depth for s in stages) + sum(s.norm_out for s in stages) + 1)
        if row.flops <= 1e9:
            assert row.latency_ms == n_parts[row.number], row
    for name in ("smt_t", "van_b0"):  # both keep 13 blocks at 1 G: 22 parts, over 17 ms
        seed = frame[frame.seed == name].iloc[0]
        assert seed.state == "REJECTED" and seed.error == "over the latency budget" and pd.isna(seed.accuracy)
        assert pd.isna(seed.duration_s)  # never reached Ray
    assert frame[frame.seed == "coatnet_0"].iloc[0].state == "COMPLETE"  # 12 parts
    complete = frame[frame.state == "COMPLETE"]
    assert len(complete) >= 3 and (complete.latency_ms <= 17).all()
    assert ((frame.state == "REJECTED") == ((frame.flops > 1e9) | (frame.latency_ms > 17))).all()
    config = json.loads((run / "config.json").read_text())
    assert config["latency_table"] == str((tmp_path / "table.json").resolve())
    assert (run / "latency_table.json").is_file()  # the run keeps its own copy
    assert "Latency predicted from the latency table" in (run / "pareto.html").read_text()


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
    reference_ms = load(run).user_attrs["latency_reference_ms"]
    result = search("--trials", "4", "--resume", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    study = load(run)
    # latencies after the resume are measured against the same reference, not one timed again
    assert study.user_attrs["latency_reference_ms"] == reference_ms and f"({reference_ms:.1f} ms)" in result.stderr
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    after = {t.number: (t.values, t.user_attrs.get("duration_s")) for t in study.trials}
    assert all(after[n] == v for n, v in before.items())  # completed trials kept, not re-run
    frame = pd.read_csv(run / "trials.csv")
    assert (frame.state == "COMPLETE").sum() >= 4
    assert set(frame[frame.state == "COMPLETE"].seed.dropna()) == {"van_b0", "smt_t"}  # seeds are never pruned


def _promotions(run: Path) -> list[optuna.trial.FrozenTrial]:
    try:
        return [t for t in load(run).trials if "promotion_of" in t.user_attrs]
    except Exception:
        return []


def _searched(study: optuna.Study) -> dict[int, tuple]:
    return {t.number: (t.state, t.values, t.user_attrs.get("duration_s")) for t in study.trials
            if "promotion_of" not in t.user_attrs}


def _check_promotions(run: Path, budget: float, k: int) -> list[optuna.trial.FrozenTrial]:
    """The finished promotions are those of the front's top-k hypervolume contributors, once each, with the
    top-1 that training the full spec at the promotion fidelity gives in this process; the run's files say so."""
    import torch

    from trials.data import load_dataset
    from trials.train import ProxyConfig, train_and_evaluate

    frame = pd.read_csv(run / "trials.csv")
    assert list(frame.columns) == TRIAL_COLUMNS
    chosen = promotion_choice(frame, budget, k)
    done = [t for t in _promotions(run) if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.user_attrs["promotion_of"] for t in done) == sorted(chosen) and chosen
    data = load_dataset("synthetic", img_size=32, seed=0, max_train=400, max_val=100)
    config = ProxyConfig(epochs=2, batch_size=64, lr=2e-3, warmup_epochs=0.2, seed=0, num_threads=1)
    rows = frame.set_index("number")
    for t in done:
        torch.manual_seed(0)
        model = nas.build_model(ArchSpec.from_json(t.user_attrs["spec"]), num_classes=data.num_classes, img_size=32)
        assert t.user_attrs["accuracy"] == train_and_evaluate(model, data, config).final_top1
        original = rows.loc[t.user_attrs["promotion_of"]]
        assert original.state == "COMPLETE" and original.promoted_accuracy == t.user_attrs["accuracy"]
        assert rows.loc[t.number, "state"] == "PROMOTION" and rows.loc[t.number, "promotion_of"] == original.name
        assert t.values == [original.accuracy, original.flops, original.latency_ms]
    front = {r["number"]: r for r in json.loads((run / "pareto.json").read_text())}
    assert set(chosen) <= set(front) and not set(front) & {t.number for t in done}
    for n, r in front.items():
        assert (r["promoted_accuracy"] is None) == (n not in chosen)
    summary = json.loads((run / "promotion.json").read_text())
    assert summary["n"] == len(chosen) and summary["fidelity"]["train_images"] == 400
    assert "promoted top-1 (%)" in (run / "pareto.html").read_text()
    return done


def test_promotions_resume_after_kill_9(tmp_path):
    """Killed while promoting: the resumed run fails the interrupted promotions, runs them again and nothing
    else (the search was complete; no promotion becomes a candidate)."""
    run = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "scripts" / "search.py"), *PROMOTE, "--trials", "2", "--seeds", "van_b0,smt_t",
           "--out", str(run)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    running = optuna.trial.TrialState.RUNNING
    try:
        _wait_for(lambda: any(t.state == running for t in _promotions(run)), 300, "a promotion to start")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    searched = _searched(load(run))
    interrupted = [t.number for t in _promotions(run) if t.state == running]
    result = search("--resume", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resume: {len(interrupted)} promotion(s) interrupted by the kill were marked failed" in result.stderr
    assert "trials: " not in result.stderr  # no search trial ran
    study = load(run)
    assert _searched(study) == searched  # the search's trials untouched, none added or queued
    assert not study.get_trials(states=(running, optuna.trial.TrialState.WAITING))
    states = pd.read_csv(run / "trials.csv").set_index("number").state
    assert all(states[n] == "INTERRUPTED" for n in interrupted)
    _check_promotions(run, 1e8, 2)


@pytest.mark.slow
def test_finished_promotions_are_not_rerun(tmp_path):
    """One promotion at a time; killed once the first has finished and the second runs: the resume runs only
    the second. A second resume finds nothing to do."""
    run = tmp_path / "run"
    # 1 CPU: two threads beside other work spin in OpenMP and train tiny models 40x slower
    cmd = [sys.executable, str(ROOT / "scripts" / "search.py"), *PROMOTE, "--trials", "4", "--workers", "1",
           "--cpus-per-trial", "1", "--seeds", "van_b0,smt_t", "--out", str(run)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    complete, running = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING
    try:
        _wait_for(lambda: [t.state for t in _promotions(run)] == [complete, running], 1200,
                  "the second promotion to start")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first, second = _promotions(run)
    result = search("--resume", str(run), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    after = _promotions(run)
    assert after[0].number == first.number and after[0].state == complete  # kept, not rerun
    assert after[1].state == optuna.trial.TrialState.FAIL and "interrupted" in after[1].user_attrs
    assert len(after) == 3 and after[2].user_attrs["promotion_of"] == second.user_attrs["promotion_of"]
    _check_promotions(run, 1e8, 2)
    again = search("--resume", str(run))
    assert again.returncode == 0 and len(_promotions(run)) == 3


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


def test_optuna_search_private_state_the_searcher_relies_on(tmp_path):
    """`BudgetedOptunaSearch` reaches into Ray's OptunaSearch (Ray 2.60): `_ot_trials` (Tune trial id ->
    the live Optuna trial), `_ot_study` (the study it tells) and `_completed_trials` (ids already told).
    Ray does not promise them: a Ray upgrade that changes them fails here, by name, not mid-search."""
    from ray.tune.search.optuna import OptunaSearch

    from nas.budget import budget_limits
    from nas.search import OBJECTIVES, STUDY_NAME, open_study
    from search_spaces.space import SearchSpace

    study = open_study(tmp_path)
    searcher = OptunaSearch(space=SearchSpace(budget_limits(1e9)), metric=[m for m, _ in OBJECTIVES],
                            mode=[m for _, m in OBJECTIVES], sampler=optuna.samplers.RandomSampler(seed=0),
                            storage=study._storage, study_name=STUDY_NAME)
    config = searcher.suggest("t1")
    ArchSpec.from_json(config["spec"])
    ot_trial = searcher._ot_trials["t1"]
    assert isinstance(ot_trial, optuna.trial.Trial) and isinstance(searcher._completed_trials, set)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.RUNNING]
    assert study.trials[ot_trial.number].params == ot_trial.params
    searcher._ot_study.tell(ot_trial, [50.0, 1e8, 3.0])  # what our on_trial_complete does
    assert study.trials[0].values == [50.0, 1e8, 3.0]
    searcher.suggest("t2")
    searcher.on_trial_complete("t2", {"accuracy": 60.0, "flops": 2e8, "latency_ms": 4.0})
    assert "t2" in searcher._completed_trials and study.trials[1].values == [60.0, 2e8, 4.0]


_WORKER_ENVIRONMENT = """
import json, os, sys, ray
from nas.config import SearchConfig
from nas.search import _init_ray
from trials.trial import WORKER_ENV
_init_ray(SearchConfig(budget_flops=1e9, out=sys.argv[1]))
print(json.dumps(ray.get(ray.remote(lambda: {name: os.environ.get(name) for name in WORKER_ENV}).remote())))
ray.shutdown()
"""


def test_ray_workers_the_search_starts_get_the_trial_environment(tmp_path):
    """The allocator settings that keep latency measurements free of page faults (trials.trial.WORKER_ENV)
    reach the processes Ray starts for trials, though the search's own process lacks them."""
    from trials.trial import WORKER_ENV

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", _WORKER_ENVIRONMENT, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == WORKER_ENV


def test_latency_source_names_the_reference_only_where_trials_use_it(tmp_path):
    from dataclasses import replace

    from nas.config import SearchConfig

    cpu = SearchConfig(budget_flops=1e9, out=tmp_path)
    assert cpu.latency_against_reference and "against a reference model" in cpu.latency_source()
    cuda = replace(cpu, latency_device="cuda")  # timed plainly: synchronised GPU runs
    assert not cuda.latency_against_reference and "reference" not in cuda.latency_source()

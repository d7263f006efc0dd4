"""Latency tables: the parts a model is cut into, a real (small) table's predictions against measurement,
the table's file format and errors, the command line, and the gate that keeps measurements undisturbed."""
from __future__ import annotations

import json
import multiprocessing
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nas
from nas.latency import (
    DEPTHWISE_KERNELS,
    STAGE_SIZES,
    CostModel,
    LatencyTable,
    LatencyTableError,
    depthwise_key,
    latency_parts,
    part_flops,
    predict_latency,
)
from nas.latency_table import build_latency_table, cost_model_names
from search_spaces import SEEDS
from search_spaces.space import RandomChoiceTrial, sample_spec
from search_spaces.spec import BLOCK_TYPES
from trials.devices import cuda_device_count
from trials.latency import LatencyGate, measure_latency

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("seed", range(40))
def test_parts_cover_the_model_exactly_once(seed):
    spec = sample_spec(RandomChoiceTrial(random.Random(seed)))
    parts = latency_parts(spec)
    # nas.count sums the counting rules per stage of the plan; the parts, one part at a time
    assert sum(p.count * part_flops(p) for p in parts) == nas.count(spec).flops
    blocks = [p for p in parts if p.model.startswith("block/")]
    assert sum(p.count for p in blocks) == sum(s.depth for s in spec.stages)
    assert {p.model for p in parts} <= set(cost_model_names())


def test_sampled_parts_reach_every_cost_model():
    """Every cost model a table fits is produced by some architecture of the space (the builder draws them)."""
    rng = random.Random(0)
    seen = set()
    for _ in range(3000):
        seen |= {p.model for p in latency_parts(sample_spec(RandomChoiceTrial(rng)))}
    assert seen == set(cost_model_names())


def test_random_choice_trial_honours_fixed_choices():
    rng = random.Random(1)
    for block in BLOCK_TYPES:
        spec = sample_spec(RandomChoiceTrial(rng, {"s3_pattern": block, "stem": "deep"}))
        assert spec.stem.type == "deep" and [b.type for b in spec.stages[2].blocks] == [block]


@pytest.fixture(scope="module")
def van_table(tmp_path_factory) -> Path:
    """A real table with the cost models VAN-B0 needs, few samples each (the command takes 12+ minutes for all)."""
    needed = sorted({p.model for p in latency_parts(SEEDS["van_b0"])})
    table = build_latency_table(models=needed, samples=10, full_models=0, warmup=1, runs=3)
    path = tmp_path_factory.mktemp("tables") / "van.json"
    table.save(path)
    return path


def test_a_measured_table_predicts_a_published_model(van_table):
    """VAN-B0 was never drawn whole by the table; its predicted latency is within 30 % of a measurement."""
    predicted = predict_latency(SEEDS["van_b0"], van_table)
    model = nas.build_model(SEEDS["van_b0"])
    measured = measure_latency(model, threads=1, warmup=5, runs=10, copy_model=False).median_ms
    assert abs(predicted - measured) / measured < 0.30, (predicted, measured)


def test_table_json_names_what_made_it_and_round_trips(van_table):
    data = json.loads(van_table.read_text())
    assert data["device"] == "cpu" and data["threads"] == 1 and data["batch"] == 1 and data["img_size"] == 224
    assert data["meta"]["versions"]["torch"] and data["meta"]["machine"]["cpu"]
    assert all(m["samples"] >= 5 and m["loo_median_error"] >= 0 for m in data["models"].values())
    table = LatencyTable.load(van_table)
    again = LatencyTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert predict_latency(SEEDS["van_b0"], again) == pytest.approx(predict_latency(SEEDS["van_b0"], table))
    with pytest.raises(LatencyTableError, match="no cost model 'stem/patch'.*rebuild it"):
        predict_latency(SEEDS["pelk_t"], table)


def test_unusable_tables_are_refused_with_the_fix(tmp_path):
    with pytest.raises(LatencyTableError, match="does not exist; make one with python scripts/latency_table.py"):
        LatencyTable.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LatencyTableError, match="not readable JSON"):
        LatencyTable.load(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text(json.dumps({"format": 0, "models": {}}))
    with pytest.raises(LatencyTableError, match="format 0.*rebuild it"):
        LatencyTable.load(tmp_path / "old.json")


def parts_table(ms_per_part: float = 1.0, threads: int = 1) -> LatencyTable:
    """Every part costs `ms_per_part`: a model's predicted latency is then its number of parts."""
    models = {name: CostModel(("one",), (ms_per_part,), min_ms=ms_per_part) for name in cost_model_names()}
    depthwise = {depthwise_key(hw, k, d): [(16, 0.0), (32, 0.0)] for hw in STAGE_SIZES for k, d in DEPTHWISE_KERNELS}
    return LatencyTable(device="cpu", threads=threads, batch=1, img_size=224, models=models, depthwise=depthwise)


def test_prediction_sums_the_parts_and_applies_the_correction():
    spec = SEEDS["smt_t"]
    parts = 1 + 3 + sum(s.depth for s in spec.stages) + 4 + 1  # stem, 3 downsamplings, blocks, stage norms, head
    assert predict_latency(spec, parts_table()) == pytest.approx(parts)
    table = parts_table()
    table.scale = 1.05
    assert predict_latency(spec, table) == pytest.approx(1.05 * parts)


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


@pytest.mark.skipif(cuda_device_count() > 0, reason="this machine has a GPU")
def test_latency_table_command_refuses_bad_input_in_one_line(tmp_path):
    result = _script("latency_table.py", "--device", "cuda", "--out", str(tmp_path / "t.json"))
    assert result.returncode == 2 and "no CUDA GPU here" in result.stderr and len(result.stderr.splitlines()) == 1
    result = _script("latency_table.py", "--out", str(tmp_path / "no" / "dir" / "t.json"))
    assert result.returncode == 2 and "not a writable directory" in result.stderr


def test_search_refuses_a_missing_or_mismatched_table_in_one_line(tmp_path):
    result = _script("search.py", "--budget", "1G", "--latency-table", str(tmp_path / "none.json"))
    assert result.returncode == 2 and "does not exist" in result.stderr and len(result.stderr.splitlines()) == 1
    parts_table(threads=1).save(tmp_path / "t.json")
    result = _script("search.py", "--budget", "1G", "--latency-table", str(tmp_path / "t.json"),
                     "--latency-threads", "2")
    assert result.returncode == 2 and "made for 1; drop --latency-threads" in result.stderr


def test_trial_with_a_predicted_latency_builds_no_full_size_model(monkeypatch):
    from dataclasses import replace

    from trials import trial
    from trials.data import make_synthetic
    from trials.fidelity import PROXY

    built = []
    real_build = nas.build_model

    def spy(spec, num_classes=1000, **kwargs):
        built.append(num_classes)
        return real_build(spec, num_classes=num_classes, **kwargs)

    monkeypatch.setattr(nas, "build_model", spy)
    data = make_synthetic(64, 32, img_size=32, seed=0)
    settings = trial.TrialSettings(fidelity=replace(PROXY, epochs=1, batch_size=32))
    metrics = trial.run_trial(SEEDS["van_b0"], data, settings, report=lambda m: None, latency_ms=12.5)
    assert metrics["latency_ms"] == 12.5 and built == [data.num_classes]  # the proxy only
    built.clear()
    trial.run_trial(SEEDS["van_b0"], data, settings, report=lambda m: None)
    assert built == [1000, data.num_classes]  # without it: the full-size model is built and timed


def _hold(path: str, side: str, started, seconds: float) -> None:
    with getattr(LatencyGate(path), side)():
        started.set()
        time.sleep(seconds)


@pytest.mark.parametrize("holder, waiter", [("measuring", "computing"), ("computing", "measuring")])
def test_latency_gate_holds_training_during_a_measurement_and_the_reverse(tmp_path, holder, waiter):
    """Across processes, as Ray's trial workers are: a step waits for a measurement under way, and a
    measurement waits for the step under way."""
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(tmp_path / "gate"), holder, started, 1.5))
    proc.start()
    try:
        assert started.wait(30)
        begin = time.perf_counter()
        with getattr(LatencyGate(tmp_path / "gate"), waiter)():
            waited = time.perf_counter() - begin
    finally:
        proc.join(30)
    assert waited > 1.0, waited
    begin = time.perf_counter()
    with LatencyGate(tmp_path / "gate").measuring(), LatencyGate(tmp_path / "gate2").computing():
        pass  # free again, and two steps never hold each other
    with LatencyGate(tmp_path / "gate").computing(), LatencyGate(tmp_path / "gate").computing():
        pass
    assert time.perf_counter() - begin < 0.5

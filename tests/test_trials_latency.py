import os
import platform
import subprocess
import sys
import time

import pytest
import timm
import torch

from trials.latency import measure_latency


def test_latency_is_positive_and_leaves_model_and_threads_alone():
    model = timm.create_model("resnet10t", num_classes=10).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.set_num_threads(2)
    result = measure_latency(model, img_size=32, batch_size=2, threads=1, warmup=2, runs=7)
    assert result.median_ms > 0 and len(result.times_ms) == 7
    assert result.p25_ms <= result.median_ms <= result.p75_ms and result.iqr_ms >= 0
    assert (result.img_size, result.batch_size, result.threads, result.device) == (32, 2, 1, "cpu")
    assert torch.get_num_threads() == 2
    assert model.training and all(m.training for m in model.modules())
    assert model.conv1[0].weight.is_contiguous()  # not converted to channels_last
    for k, v in model.state_dict().items():  # BatchNorm running stats untouched
        assert torch.equal(v, before[k])


def test_single_run_and_bad_runs():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    result = measure_latency(model, img_size=16, warmup=0, runs=1)
    assert result.median_ms == result.p25_ms == result.p75_ms > 0
    with pytest.raises(ValueError, match="runs"):
        measure_latency(model, img_size=16, runs=0)


def test_sparsity_masks_are_applied_once_per_measurement(monkeypatch):
    """A deployed sparse model stores masked weights: timing must not redo weight * mask per forward,
    and the caller's model keeps its masks (it may still be training)."""
    from torch.nn.utils import parametrize

    from nas.sparse import FixedMask, apply_sparsity

    model = apply_sparsity(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()), 0.4)
    calls = []
    original = FixedMask.forward
    monkeypatch.setattr(FixedMask, "forward", lambda self, w: calls.append(1) or original(self, w))
    measure_latency(model, img_size=16, warmup=1, runs=3)
    assert len(calls) == 1  # cached once; uncached, each of the 4 forwards would apply it
    assert parametrize.is_parametrized(model[0], "weight")
    assert (model[0].weight == 0).sum() == int(0.4 * model[0].weight.numel())


def test_a_model_built_only_to_be_timed_is_timed_without_a_copy():
    model = timm.create_model("resnet10t", num_classes=10).train()
    result = measure_latency(model, img_size=32, warmup=1, runs=3, copy_model=False)
    assert result.median_ms > 0
    assert not model.training  # converted in place: eval mode, channels_last
    assert model.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)


# Full-size models timed one after the other in a thread, as a Ray worker's trials time them: page faults
# per forward, warm-ups included.
_FAULTS_IN_A_THREAD = """
import resource, threading
import torch, nas
from search_spaces import SEEDS
from trials.latency import measure_latency
torch.set_num_threads(1)
def run():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        model = nas.build_model(SEEDS[{arch!r}], num_classes=1000)
        measure_latency(model, warmup=5, runs=10, copy_model=False)
        del model
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 45)
thread = threading.Thread(target=run)
thread.start()
thread.join()
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")
def test_trial_processes_time_a_model_in_a_thread_without_page_faults():
    """Without WORKER_ENV each forward in a thread maps its activations afresh (glibc unmaps an emptied
    thread heap); with it, the pages stay mapped after the warm-up."""
    from trials.trial import WORKER_ENV

    def faults_per_forward(extra: dict[str, str]) -> float:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | extra
        done = subprocess.run([sys.executable, "-c", _FAULTS_IN_A_THREAD.format(arch="van_b2")], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return float(done.stdout.split()[-1])

    assert faults_per_forward({}) > 5_000  # 4 KB pages: 20 MB of activations mapped again, on average
    assert faults_per_forward(WORKER_ENV) < 1_500  # the first forwards of each model only


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_a_reference_cancels_a_slowdown_of_the_whole_machine():
    """With a busy process sharing its core, a model runs about half as fast; timed against a reference
    that shares the slowdown, it reads what it reads on a free core."""
    import nas
    from search_spaces import SEEDS
    from trials.latency import LatencyReference

    model = nas.build_model(SEEDS["van_b0"], num_classes=1000)
    core = {min(os.sched_getaffinity(0))}
    allowed = os.sched_getaffinity(0)
    reference = LatencyReference.measure(runs=10)
    os.sched_setaffinity(0, core)
    try:
        alone = measure_latency(model, warmup=3, runs=10).median_ms
        alone_against = measure_latency(model, warmup=3, runs=10, reference=reference).median_ms
        spinner = subprocess.Popen([sys.executable, "-c",
                                    f"import os\nos.sched_setaffinity(0, {core})\nwhile True: pass"])
        try:
            time.sleep(0.5)
            shared = measure_latency(model, warmup=3, runs=10).median_ms
            shared_against = measure_latency(model, warmup=3, runs=10, reference=reference).median_ms
        finally:
            spinner.kill()
            spinner.wait()
    finally:
        os.sched_setaffinity(0, allowed)
    assert shared > 1.5 * alone  # the slowdown is real
    assert shared_against == pytest.approx(alone_against, rel=0.15)

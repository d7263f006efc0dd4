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

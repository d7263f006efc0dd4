import copy
import sys

import pytest
import torch
from torch import nn

from nas.ops.dynamic import DynamicConvBlock
from search_spaces import BlockSpec
from trials.data import TrialData, make_synthetic
from trials.train import ProxyConfig, StopTrial, TrialFailed, train_and_evaluate


def _tiny_cnn(num_classes: int, width: int = 16) -> nn.Module:
    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(
        *block(3, width), nn.MaxPool2d(2), *block(width, 2 * width), nn.MaxPool2d(2),
        *block(2 * width, 4 * width), nn.MaxPool2d(2), *block(4 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes),
    )


def _toy_data(n_train=256, n_val=64, seed=0) -> TrialData:
    """Two classes told apart by the sign of channel 0's mean: linearly separable."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_val, 3, 8, 8, generator=g)
    y = torch.arange(n_train + n_val) % 2
    x[:, 0] += (2.0 * y - 1.0)[:, None, None]
    return TrialData("toy", x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes=2)


def test_training_learns_a_separable_toy_set():
    torch.manual_seed(0)
    result = train_and_evaluate(_tiny_cnn(2), _toy_data(), ProxyConfig(epochs=3, batch_size=32, lr=3e-3))
    assert result.epochs_run == 3 and len(result.val_top1) == 3
    assert result.train_loss[-1] < result.train_loss[0]
    assert result.final_top1 >= 90.0
    assert result.train_time_s > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_the_gpu_learns_as_on_the_cpu():
    """bf16 autocast and channels_last on CUDA: the separable toy set is learnt as well as in float32."""
    scores = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        result = train_and_evaluate(_tiny_cnn(2), _toy_data(), ProxyConfig(epochs=3, batch_size=32, lr=3e-3,
                                                                           device=device))
        scores[device] = result.final_top1
    assert scores["cuda"] >= 90.0 and abs(scores["cuda"] - scores["cpu"]) <= 5.0


def test_training_is_deterministic_given_seed():
    torch.manual_seed(0)
    model = _tiny_cnn(2)
    cfg = ProxyConfig(epochs=2, batch_size=32, seed=7)
    a = train_and_evaluate(copy.deepcopy(model), _toy_data(), cfg)
    b = train_and_evaluate(copy.deepcopy(model), _toy_data(), cfg)
    assert a.train_loss == b.train_loss and a.val_top1 == b.val_top1


def test_callback_gets_every_epoch_and_can_stop():
    torch.manual_seed(0)
    seen = []
    result = train_and_evaluate(_tiny_cnn(2), _toy_data(), ProxyConfig(epochs=3, batch_size=64),
                                on_epoch=lambda *args: seen.append(args))
    assert [s[0] for s in seen] == [1, 2, 3]
    assert [s[1] for s in seen] == result.val_top1 and [s[2] for s in seen] == result.train_loss

    def stop_after_two(epoch, top1, loss):
        if epoch == 2:
            raise StopTrial

    result = train_and_evaluate(_tiny_cnn(2), _toy_data(), ProxyConfig(epochs=5, batch_size=64), on_epoch=stop_after_two)
    assert result.epochs_run == 2 and result.stopped_early and len(result.val_top1) == 2


def test_callback_errors_propagate_and_threads_are_restored():
    torch.set_num_threads(2)

    def boom(epoch, top1, loss):
        raise KeyError("reporter gone")

    with pytest.raises(KeyError):
        train_and_evaluate(_tiny_cnn(2), _toy_data(), ProxyConfig(epochs=2, num_threads=1), on_epoch=boom)
    assert torch.get_num_threads() == 2


class _NaNModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3))) * float("nan")


@pytest.mark.parametrize("model_fn, lr", [(_NaNModel, 1e-3), (lambda: _tiny_cnn(2), 1e30)])
def test_non_finite_loss_raises_trial_failed(model_fn, lr):
    torch.manual_seed(0)
    with pytest.raises(TrialFailed, match="lower lr"):
        train_and_evaluate(model_fn(), _toy_data(), ProxyConfig(epochs=3, batch_size=32, lr=lr))


def test_tiny_cnn_beats_chance_on_synthetic():
    """The synthetic set is learnable within a proxy budget (chance is 1/15)."""
    data = make_synthetic(1500, 300, img_size=32, seed=0)
    torch.manual_seed(0)
    result = train_and_evaluate(_tiny_cnn(data.num_classes), data, ProxyConfig(epochs=3, batch_size=32, lr=3e-3))
    assert result.final_top1 > 2 * 100 / data.num_classes



def _tiny_dynconv_net() -> tuple[nn.Module, list[tuple[bool, float]]]:
    """A stem conv, one DynamicConv block (depthwise 3x3, 4 kernels, built at temperature 30), a 2-way
    classifier; and the (training, temperature) its DynamicConv sees at every forward pass."""
    dyn = DynamicConvBlock(8, 8, BlockSpec("dynconv").params)
    seen: list[tuple[bool, float]] = []

    def record(module: nn.Module, args: tuple) -> None:
        seen.append((module.training, module.temperature))

    dyn.mixer.register_forward_pre_hook(record)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), dyn, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)), seen


def test_dynconv_temperature_anneals_linearly_to_one():
    torch.manual_seed(0)
    model, seen = _tiny_dynconv_net()
    cfg = ProxyConfig(epochs=3, batch_size=64, temperature_anneal=0.5)  # 256 images: 4 steps an epoch
    result = train_and_evaluate(model, _toy_data(), cfg)
    assert result.epochs_run == 3
    train = [t for training, t in seen if training]
    evals = [t for training, t in seen if not training]
    assert len(train) == 12 and len(evals) == 3  # the 64 val images are one eval batch
    # 30 -> 1 linearly over the first half of the 12 steps (6), then 1
    for step, t in enumerate(train):
        assert t == pytest.approx(30 - 29 * min(step / 6, 1.0), rel=1e-12), step
    # each evaluation runs at the temperature reached after its epoch's steps: 4 of 6, then all
    assert evals == pytest.approx([30 - 29 * 4 / 6, 1.0, 1.0]) and evals[1:] == [1.0, 1.0]
    assert model[1].temperature == 1.0


def test_default_anneal_takes_the_first_quarter_and_is_validated():
    torch.manual_seed(0)
    model, seen = _tiny_dynconv_net()
    train_and_evaluate(model, _toy_data(), ProxyConfig(epochs=4, batch_size=64))  # 16 steps, 4 of annealing
    train = [t for training, t in seen if training]
    assert train == pytest.approx([30.0, 30 - 29 / 4, 30 - 58 / 4, 30 - 87 / 4] + [1.0] * 12)
    assert seen[-1] == (False, 1.0)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="temperature_anneal"):
            ProxyConfig(temperature_anneal=bad)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; malloc_trim is glibc's")
def test_freed_heap_pages_go_back_to_the_os():
    """What a reused Ray actor relies on between trials: pages freed in the middle of the heap (a live
    block above them keeps the heap from shrinking) are returned by `release_freed_memory`."""
    from trials.trial import release_freed_memory

    def rss_mb() -> float:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))

    blocks = [bytearray(64 * 1024) for _ in range(2000)]  # 125 MB in blocks under the mmap threshold
    for block in blocks:
        block[::4096] = b"\1" * len(block[::4096])  # touch every page
    last = blocks[-1]
    del blocks
    held = rss_mb()
    release_freed_memory()
    assert held - rss_mb() > 80, "freed pages were not returned"
    assert len(last) == 64 * 1024

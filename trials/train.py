"""Proxy training of one candidate: a short AdamW + cosine run, then held-out top-1.

The loop is deliberately bare (in-memory tensor batches, one host sync per
epoch) so the trial costs about what a hand-written PyTorch loop would. On CUDA
it runs under bf16 autocast on channels_last tensors (no loss scaling needed
with bf16); on the CPU in float32, as the proxy's ranking was measured.
DynamicConv's attention temperature is annealed per step (`dynconv_temperature`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nas.ops.dynamic import anneal_temperature, set_temperature
from trials.data import TrialData
from trials.fidelity import PROXY, Fidelity
from trials.latency import to_channels_last

_logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, float, float], None]
StepGuard = Callable[[], AbstractContextManager[Any]]


class TrialFailed(RuntimeError):
    """The trial cannot produce a meaningful score (e.g. the loss diverged)."""


class StopTrial(Exception):
    """Raise from ``on_epoch`` to end training early and keep the result so far."""


@dataclass
class ProxyConfig:
    """Hyper-parameters of a proxy run; epochs, batch, learning rate and warmup default to the search's
    proxy (`trials.fidelity.PROXY`), `from_fidelity` takes them from any other fidelity."""

    epochs: int = PROXY.epochs
    batch_size: int = PROXY.batch_size
    lr: float = PROXY.lr
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    warmup_epochs: float = PROXY.warmup_epochs  # linear warmup before the cosine decay, may be fractional
    min_lr_ratio: float = 0.01  # cosine floor as a fraction of lr
    seed: int = 0
    num_threads: int | None = None  # torch.set_num_threads during the trial; None keeps the current
    device: str = "cpu"
    # 128, not more: evaluation's peak memory grows with it (512 took a 5 GFLOPs CoAtNet proxy's trial from
    # +256 to +369 MB), its speed does not, and top-1 does not depend on it
    eval_batch_size: int = 128
    # DynamicConv's attention temperature: linear from temperature_start to 1 over this fraction of the
    # training steps, then 1 (see dynconv_temperature); no effect on models without DynamicConv
    temperature_anneal: float = 0.25
    temperature_start: float = 30.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature_anneal <= 1.0:
            raise ValueError(f"temperature_anneal is a fraction of the training steps in [0, 1], "
                             f"got {self.temperature_anneal}: the run must end at temperature 1")
        if not self.temperature_start > 0:
            raise ValueError(f"temperature_start must be > 0, got {self.temperature_start}")

    @classmethod
    def from_fidelity(cls, fidelity: Fidelity, **changes: Any) -> ProxyConfig:
        """The training run of `fidelity` (its epochs, batch, learning rate, warmup); `changes` set the rest
        (seed, num_threads, device, ...)."""
        return cls(epochs=fidelity.epochs, batch_size=fidelity.batch_size, lr=fidelity.lr,
                   warmup_epochs=fidelity.warmup_epochs, **changes)


@dataclass
class TrainResult:
    """Outcome of a proxy run; accuracies are top-1 in percent on the val split.

    train_time_s is the wall time of all epochs run, evaluation included.
    """

    val_top1: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_time_s: float = 0.0
    epochs_run: int = 0
    stopped_early: bool = False

    @property
    def final_top1(self) -> float:
        return self.val_top1[-1] if self.val_top1 else 0.0


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and norm scales, as timm does for AdamW."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _lr_lambda(total_steps: int, warmup_steps: int, min_ratio: float) -> Callable[[int], float]:
    """Per-step multiplier: linear warmup, then cosine from 1 to min_ratio."""

    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

    return fn


def dynconv_temperature(steps_done: int, steps_per_epoch: int, cfg: ProxyConfig) -> float:
    """DynamicConv's softmax temperature once `steps_done` training steps have been taken.

    Chen et al. (CVPR 2020) start at 30, where the attention over the K kernels is near uniform so that
    every kernel gets gradient and learns, and fall linearly to 1 over their first 10 ImageNet epochs, a
    small part of their run. The same part of the search's 4-epoch proxy (46 steps an epoch) would be a
    few steps (10 of 100 epochs: 18), over before the attention layers have learnt anything. Annealing
    over the first quarter (`temperature_anneal`) gives the near-uniform phase one full pass over the
    data and leaves three quarters of the run, the ASHA rung at epoch 2 included, at 1, the temperature
    the model is evaluated with.
    """
    return anneal_temperature(steps_done / steps_per_epoch, start=cfg.temperature_start, end=1.0,
                              epochs=cfg.temperature_anneal * cfg.epochs)


def _autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a no-op elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def _batch(x: torch.Tensor) -> torch.Tensor:
    """channels_last on CUDA (cuDNN's fast layout under autocast), as is on the CPU."""
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128,
             step_guard: StepGuard = contextlib.nullcontext) -> float:
    """Top-1 accuracy in percent; leaves the model in eval mode. Each batch runs inside `step_guard()`."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=y.device)
    for i in range(0, len(y), batch_size):
        with step_guard(), _autocast(x.device):
            logits = model(_batch(x[i:i + batch_size]))
        correct += (logits.argmax(dim=-1) == y[i:i + batch_size]).sum()
    return 100.0 * correct.item() / max(1, len(y))


def train_and_evaluate(
        model: nn.Module,
        data: TrialData,
        cfg: ProxyConfig | None = None,
        on_epoch: EpochCallback | None = None,
        step_guard: StepGuard = contextlib.nullcontext,
) -> TrainResult:
    """Train model in place on data.train_*, report val top-1 after every epoch.

    Every optimiser step and evaluation batch runs inside `step_guard()`: a latency measurement on the
    same machine can hold training between two steps (`trials.latency.LatencyGate.computing`).

    on_epoch(epoch, val_top1, train_loss) is called after each epoch (epoch counts
    from 1); raising StopTrial in it ends training and returns the result so far,
    any other exception propagates. Raises TrialFailed if the loss is not finite.
    Results are deterministic for a given model state, data and cfg.seed.
    """
    cfg = cfg or ProxyConfig()
    prev_threads = torch.get_num_threads()
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _run(model, data, cfg, on_epoch, step_guard)
    finally:
        torch.set_num_threads(prev_threads)


def _run(
        model: nn.Module, data: TrialData, cfg: ProxyConfig, on_epoch: EpochCallback | None,
        step_guard: StepGuard,
) -> TrainResult:
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)  # dropout / drop-path inside the model
    order_gen = torch.Generator().manual_seed(cfg.seed)  # batch order, independent of the model

    model.to(device)
    if device.type == "cuda":
        to_channels_last(model)
        torch.backends.cudnn.benchmark = True  # one input shape for the whole run
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    val_x, val_y = data.val_x.to(device), data.val_y.to(device)
    n = len(train_y)
    if n == 0:
        raise ValueError(f"dataset '{data.name}' has no training samples")
    bs = min(cfg.batch_size, n)
    # Drop the ragged last batch: a batch of one breaks BatchNorm in train mode.
    steps = n // bs

    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        _lr_lambda(cfg.epochs * steps, round(cfg.warmup_epochs * steps), cfg.min_lr_ratio),
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    result = TrainResult()
    start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=order_gen).to(device)
        loss_sum = torch.zeros((), device=device)
        for i in range(steps):
            set_temperature(model, dynconv_temperature((epoch - 1) * steps + i, steps, cfg))
            idx = perm[i * bs:(i + 1) * bs]
            with step_guard():
                with _autocast(device):
                    loss = criterion(model(_batch(train_x[idx])), train_y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach()
        train_loss = loss_sum.item() / steps  # the only host sync of the epoch's steps
        if not math.isfinite(train_loss):
            raise TrialFailed(
                f"training loss became {train_loss} in epoch {epoch}; lower lr "
                f"(now {cfg.lr:g}) or check the architecture for unstable ops"
            )
        set_temperature(model, dynconv_temperature(epoch * steps, steps, cfg))  # the one reached: 1 at the end
        val_top1 = evaluate(model, val_x, val_y, cfg.eval_batch_size, step_guard)
        result.val_top1.append(val_top1)
        result.train_loss.append(train_loss)
        result.epochs_run = epoch
        result.train_time_s = time.perf_counter() - start
        _logger.debug("epoch %d: train_loss %.4f val_top1 %.2f", epoch, train_loss, val_top1)
        if on_epoch is not None:
            try:
                on_epoch(epoch, val_top1, train_loss)
            except StopTrial:
                result.stopped_early = True
                break
    return result

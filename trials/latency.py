"""Inference latency of one candidate, measured the way it would be deployed, and undisturbed.

The model is timed on a deep copy, so channels_last conversion, the device move
and eval mode never leak into the caller's model (which may still be training);
a model built only to be timed can skip the copy.
Parametrized weights (the fixed sparsity masks) are computed once and cached for
the whole measurement, as a deployed model stores them: otherwise every forward
would redo `weight * mask` (about 8% of PeLK-T's latency).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
from torch.nn.utils import parametrize

_logger = logging.getLogger(__name__)


@dataclass
class LatencyResult:
    """Per-forward wall times in milliseconds for one batch (with a reference: each run's time relative to
    the reference's run beside it, times the reference's latency)."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    times_ms: list[float]
    img_size: int
    batch_size: int
    device: str
    threads: int

    @property
    def iqr_ms(self) -> float:
        return self.p75_ms - self.p25_ms


@dataclass(frozen=True)
class LatencyReference:
    """A fixed model timed right after each run of the candidate, so that latency is measured against it.

    A shared or virtual machine's speed drifts: on this project's, one model timed over and over in a quiet
    process read medians of 170-230 ms within 40 s, more than the differences a search must rank. A model
    timed beside the candidate drifts with it: the median of their per-run ratios, times the
    reference's latency measured once for the whole run (`ms`), moved 1-5 % where the plain median moved
    7-13 % (benchmarks/README.md). CoAtNet-0 at 128 px: convolutions, MBConv and attention, 48 ms here.
    """

    ms: float  # the reference's latency, measured once for a run with `measure`
    arch: str = "coatnet_0"
    img_size: int = 128

    def build(self) -> nn.Module:
        import nas
        from search_spaces import SEEDS

        return nas.build_model(SEEDS[self.arch], num_classes=1000, img_size=self.img_size)

    @classmethod
    def measure(cls, batch_size: int = 1, device: str = "cpu", threads: int = 1, runs: int = 20,
                rounds: int = 3) -> LatencyReference:
        """The reference's own latency, measured once, before a run's trials start: the lowest of `rounds`
        medians, since what disturbs a measurement here only ever slows it."""
        unmeasured = cls(ms=math.nan)
        model = unmeasured.build()
        ms = min(measure_latency(model, img_size=unmeasured.img_size, batch_size=batch_size, device=device,
                                 threads=threads, warmup=10, runs=runs, copy_model=False).median_ms
                 for _ in range(rounds))
        return replace(unmeasured, ms=ms)


class LatencyGate:
    """Measures latency while nothing else of ours computes on this machine.

    Measured during a search, a model's latency depended on what the other trials were doing: the same
    architecture read 27 and 47 ms in one run. So what a trial computes (building a model, each training
    and evaluation step) runs inside `computing()` and each measurement inside `measuring()`: a
    measurement waits for the computations under way (on any process of this machine) to end and holds
    new ones until it is done; the others wait a few seconds at most. Two file locks (flock): it works
    across Ray's worker processes and costs microseconds a step; they live in the machine's temporary
    directory, so trials on other nodes of a cluster, which do not disturb, are not held. Where flock
    does not exist (Windows) it does nothing.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else Path(tempfile.gettempdir()) / "hybrid-nas-latency"
        self._files: tuple[int, int] | None = None

    def _fds(self) -> tuple[int, int] | None:
        if fcntl is None:
            return None
        if self._files is None:  # opened lazily: a gate travels to Ray workers by pickling
            self._files = tuple(os.open(f"{self.path}.{name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
                                for name in ("gate", "work"))  # type: ignore[assignment]
        return self._files

    def __getstate__(self) -> dict:
        return {"path": self.path, "_files": None}

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        fds = self._fds()
        if fds is None:
            yield
            return
        gate, work = fds
        with _flock(gate, fcntl.LOCK_EX), _flock(work, fcntl.LOCK_EX):  # no new step; those under way ended
            yield

    @contextlib.contextmanager
    def computing(self) -> Iterator[None]:
        fds = self._fds()
        if fds is None:
            yield
            return
        gate, work = fds
        with _flock(gate, fcntl.LOCK_SH):  # waits while a measurement holds the gate
            pass
        with _flock(work, fcntl.LOCK_SH):
            yield


@contextlib.contextmanager
def _flock(fd: int, mode: int) -> Iterator[None]:
    fcntl.flock(fd, mode)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def channels_last_input(*shape: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """A random input of `shape` (batch, channels, height, width) in channels_last, as the models run."""
    return torch.randn(*shape, device=device).contiguous(memory_format=torch.channels_last)


Call = tuple[nn.Module, tuple[torch.Tensor, ...]]


def time_in_turns(calls: list[Call], warmup: int, runs: int) -> list[list[float]]:
    """Milliseconds of every run of each `module(*args)` under inference mode, timed in turns: each run of
    one follows a run of each of the others. On CUDA every run is bracketed by synchronisation so that
    the time covers the kernels."""
    cuda = any(args[0].device.type == "cuda" for _, args in calls)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times: list[list[float]] = [[] for _ in calls]
    with torch.inference_mode():
        for _ in range(warmup):
            for module, args in calls:
                module(*args)
        sync()
        for _ in range(runs):
            for (module, args), timed in zip(calls, times):
                start = time.perf_counter()
                module(*args)
                sync()
                timed.append(1000.0 * (time.perf_counter() - start))
    return times


def to_channels_last(model: nn.Module) -> nn.Module:
    """channels_last for the 4-D weights; Module.to(memory_format=...) refuses a model holding other
    ranks (e.g. CondConv's bank of expert kernels)."""
    for param in model.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
    return model


def measure_latency(
        model: nn.Module,
        img_size: int = 224,
        batch_size: int = 1,
        device: str = "cpu",
        threads: int = 1,
        warmup: int = 10,
        runs: int = 30,
        in_chans: int = 3,
        copy_model: bool = True,
        reference: LatencyReference | None = None,
) -> LatencyResult:
    """Median forward time of a deep copy of model in eval / inference mode (of model itself, converted
    in place, with copy_model=False: for a model built only to be timed, whose copy would double its memory).

    The input and the copy are channels_last; torch's intra-op thread count is
    fixed to threads for the measurement and restored afterwards (`time_in_turns`
    times the runs). With a `reference`, its model runs after each run of this one
    and the times are measured against it (`LatencyReference`).
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    dev = torch.device(device)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        net = to_channels_last((copy.deepcopy(model) if copy_model else model).to(dev)).eval()
        calls: list[Call] = [(net, (channels_last_input(batch_size, in_chans, img_size, img_size, device=dev),))]
        if reference is not None:
            calls.append((to_channels_last(reference.build().to(dev)).eval(),
                          (channels_last_input(batch_size, 3, reference.img_size, reference.img_size, device=dev),)))
        # removing the parametrizations instead would edit the class the copy shares with `model`
        with parametrize.cached():
            runs_ms = time_in_turns(calls, warmup, runs)
    finally:
        torch.set_num_threads(prev_threads)
    times = runs_ms[0] if reference is None else [reference.ms * a / b for a, b in zip(*runs_ms)]
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
    result = LatencyResult(
        median_ms=statistics.median(times), p25_ms=q[0], p75_ms=q[2], times_ms=times,
        img_size=img_size, batch_size=batch_size, device=str(dev), threads=threads,
    )
    _logger.debug("latency %.3f ms (IQR %.3f) on %s", result.median_ms, result.iqr_ms, dev)
    return result

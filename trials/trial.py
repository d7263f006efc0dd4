"""One search trial: count the full-size model, measure its latency, train its proxy, report; and one
promotion: train a candidate again at a higher fidelity.

Both are plain Python (no Ray): `nas.search` wraps the trial as a Ray Tune trainable and the promotion
as a Ray task. FLOPs and latency belong to the full-size model at 224x224; accuracy to the model
trained at the fidelity (`trials.fidelity`): the proxy's (smaller images, width and depth) in a trial.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import nas
from search_spaces.spec import ArchSpec
from trials.data import TrialData
from trials.fidelity import PROXY, Fidelity
from trials.latency import LatencyGate, LatencyReference, measure_latency
from trials.train import ProxyConfig, TrainResult, train_and_evaluate

__all__ = ["TrialSettings", "run_trial", "run_promotion", "release_freed_memory", "WORKER_ENV"]

_logger = logging.getLogger(__name__)
Report = Callable[[dict[str, Any]], None]

# The environment of a process that runs trials: glibc's allocator set so that a forward pass of a
# full-size model finds its activations' pages still mapped from the forward before. By default
# - Ray Tune runs a trial in a thread of its worker, and glibc gives a thread a heap of its own that it
#   unmaps whenever it empties: VAN-B2 (5 GFLOPs) faulted 55,000 pages a forward and read 290 ms, not 180;
# - in the main heap, a young process maps its larger blocks one by one and returns the heap's free top
#   past a threshold that grows with what it has freed: the first models a worker timed faulted 6,000 to
#   9,000 pages a forward and read up to 29 % high (CoAtNet-0: 162 ms, then 131 and 126).
# One heap, blocks up to 32 MB (glibc's largest threshold) from the heap, and no return of its top until
# `release_freed_memory` after a trial: no faults after the warm-up. Read when a process starts.
WORKER_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(4 << 30)}


@dataclass
class TrialSettings:
    """Everything a trial needs besides the spec and the data. The proxy's model size and training
    run both come from `fidelity` (its image counts and size are the data's business)."""

    fidelity: Fidelity = PROXY
    seed: int = 0  # weights' initialisation and batch order
    img_size: int = 224  # the full-size model's resolution, for FLOPs and latency
    latency_device: str = "cpu"
    latency_warmup: int = 5  # the first model timed in a process read up to 40 % high after 3
    latency_runs: int = 20  # medians of 10 runs of VAN-B2 moved 6 % between measurements, of 20 3 %
    latency_budget_ms: float | None = None
    latency_threads: int = 1  # fixed for a whole study, so that its latencies compare
    threads: int = 1  # for training
    device: str = "cpu"  # for training; latency has its own (`latency_device`)
    # measurements wait for this machine's other trials to finish their step and hold them meanwhile;
    # None: measure beside them (a lone trial, tests)
    gate: LatencyGate | None = None
    # latency measured against this model, timed between the candidate's runs; None: plain milliseconds
    latency_reference: LatencyReference | None = None

    @property
    def proxy(self) -> ProxyConfig:
        """The proxy's training run: the fidelity's epochs, batch, learning rate, warmup; this seed and threads."""
        return ProxyConfig.from_fidelity(self.fidelity, seed=self.seed, num_threads=self.threads, device=self.device)


def run_trial(spec: ArchSpec, data: TrialData, settings: TrialSettings, report: Report,
              latency_ms: float | None = None) -> dict[str, Any]:
    """Measure and train one candidate; `report(metrics)` is called after each epoch (and once when
    the latency budget rejects it). Returns the last metrics. Raises TrialFailed on NaN losses.

    `latency_ms` known already (predicted from a latency table) is taken as is: no full-size model is
    built then."""
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _run_trial(spec, data, settings, report, latency_ms)
    finally:
        torch.set_num_threads(threads)
        release_freed_memory()


def _run_trial(spec: ArchSpec, data: TrialData, settings: TrialSettings, report: Report,
               latency_ms: float | None) -> dict[str, Any]:
    start = time.perf_counter()
    counted = nas.count(spec, settings.img_size)
    metrics: dict[str, Any] = dict(params=counted.params, flops=counted.flops, accuracy=0.0, epoch=0)
    metrics["latency_ms"] = _measure(spec, settings) if latency_ms is None else latency_ms
    if settings.latency_budget_ms is not None and metrics["latency_ms"] > settings.latency_budget_ms:
        metrics.update(infeasible=1, duration_s=time.perf_counter() - start)
        report(metrics)
        return metrics

    guard = settings.gate.computing if settings.gate is not None else contextlib.nullcontext
    torch.manual_seed(settings.seed)
    with guard():
        model = nas.build_model(settings.fidelity.model_spec(spec), num_classes=data.num_classes,
                                img_size=data.img_size)

    def on_epoch(epoch: int, top1: float, loss: float) -> None:
        metrics.update(accuracy=top1, epoch=epoch, train_loss=loss, duration_s=time.perf_counter() - start)
        report(dict(metrics))

    train_and_evaluate(model, data, settings.proxy, on_epoch=on_epoch, step_guard=guard)
    return metrics


def _measure(spec: ArchSpec, settings: TrialSettings) -> float:
    """The full-size model's median latency, measured with this machine's other trials held (`gate`):
    whatever they compute (building a model, a training step) waits, and the measurement waits for it."""
    gate = settings.gate
    with gate.computing() if gate is not None else contextlib.nullcontext():
        full = nas.build_model(spec, num_classes=1000, img_size=settings.img_size)
    with gate.measuring() if gate is not None else contextlib.nullcontext():
        latency = measure_latency(full, img_size=settings.img_size, device=settings.latency_device,
                                  threads=settings.latency_threads, warmup=settings.latency_warmup,
                                  runs=settings.latency_runs, copy_model=False,
                                  reference=settings.latency_reference)
    del full
    release_freed_memory()
    return latency.median_ms


def release_freed_memory() -> None:
    """Hand the heap pages freed so far back to the OS (glibc's malloc_trim; elsewhere nothing). A Ray
    actor runs trial after trial: without this, the pages a candidate's full-size model and training
    freed stay with the process, scattered over its allocator arenas (benchmarks/search_memory.py)."""
    gc.collect()  # objects in reference cycles first
    if _malloc_trim is not None:
        _malloc_trim(0)


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return None


_malloc_trim = _load_malloc_trim()


def run_promotion(spec: ArchSpec, data: TrialData, fidelity: Fidelity, seed: int = 0,
                  threads: int = 1, device: str = "cpu") -> dict[str, Any]:
    """Train `fidelity.model_spec(spec)` (the full model at a promotion fidelity) on `data` with the
    fidelity's training run, as a trial trains its proxy (same seeding); no latency, no reporting.

    Returns accuracy (the final held-out top-1, %), val_top1 (per epoch), train_loss, epochs, images
    (training images), duration_s (wall) and cpu_s (this process's CPU time: what the promotion costs
    whatever else the machine runs). Raises TrialFailed on NaN losses, like a trial."""
    start, cpu = time.perf_counter(), time.process_time()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = _train_at(fidelity, spec, data, seed, threads, device)
    finally:
        torch.set_num_threads(previous)
        release_freed_memory()  # the model is gone with `_train_at`'s frame
    return dict(accuracy=result.final_top1, val_top1=result.val_top1, train_loss=result.train_loss,
                epochs=result.epochs_run, images=len(data.train_y), duration_s=time.perf_counter() - start,
                cpu_s=time.process_time() - cpu)


def _train_at(fidelity: Fidelity, spec: ArchSpec, data: TrialData, seed: int, threads: int,
              device: str) -> TrainResult:
    torch.manual_seed(seed)
    model = nas.build_model(fidelity.model_spec(spec), num_classes=data.num_classes, img_size=data.img_size)
    return train_and_evaluate(model, data, ProxyConfig.from_fidelity(fidelity, seed=seed, num_threads=threads,
                                                                     device=device))

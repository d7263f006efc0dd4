"""One search trial: count the full-size model, measure its latency, train its proxy, report.

The trial is plain Python (no Ray): `nas.search` wraps it as a Ray Tune trainable. FLOPs and latency
belong to the full-size model at 224x224; accuracy to the proxy (smaller images, width and depth).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

import nas
from search_spaces.scaling import scale_spec
from search_spaces.spec import ArchSpec
from trials.data import TrialData
from trials.latency import measure_latency
from trials.train import ProxyConfig, train_and_evaluate

__all__ = ["ProxyScale", "TrialSettings", "run_trial", "proxy_spec"]

_logger = logging.getLogger(__name__)
Report = Callable[[dict[str, Any]], None]


@dataclass
class ProxyScale:
    """How much smaller the trained proxy is than the full model (image size comes from the data)."""

    width: float = 0.5  # stage widths x this, rounded to multiples of 16
    max_depth: int = 2  # blocks per stage at most


@dataclass
class TrialSettings:
    """Everything a trial needs besides the spec and the data."""

    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    scale: ProxyScale = field(default_factory=ProxyScale)
    img_size: int = 224  # the full-size model's resolution, for FLOPs and latency
    latency_device: str = "cpu"
    latency_warmup: int = 3
    latency_runs: int = 10
    latency_budget_ms: float | None = None
    latency_threads: int = 1  # fixed for a whole study, so that its latencies compare
    threads: int = 1  # for training


def proxy_spec(spec: ArchSpec, scale: ProxyScale) -> ArchSpec:
    """The spec trained as the proxy: narrower and shallower, same operators and layout."""
    return scale_spec(spec, width=scale.width, max_depth=scale.max_depth, multiple=16)


def run_trial(spec: ArchSpec, data: TrialData, settings: TrialSettings, report: Report) -> dict[str, Any]:
    """Measure and train one candidate; `report(metrics)` is called after each epoch (and once when
    the latency budget rejects it). Returns the last metrics. Raises TrialFailed on NaN losses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _run_trial(spec, data, settings, report)
    finally:
        torch.set_num_threads(threads)


def _run_trial(spec: ArchSpec, data: TrialData, settings: TrialSettings, report: Report) -> dict[str, Any]:
    start = time.perf_counter()
    counted = nas.count(spec, settings.img_size)
    metrics: dict[str, Any] = dict(params=counted.params, flops=counted.flops, accuracy=0.0, epoch=0)

    full = nas.build_model(spec, num_classes=1000, img_size=settings.img_size)
    latency = measure_latency(full, img_size=settings.img_size, device=settings.latency_device,
                              threads=settings.latency_threads, warmup=settings.latency_warmup,
                              runs=settings.latency_runs)
    del full
    metrics["latency_ms"] = latency.median_ms
    if settings.latency_budget_ms is not None and latency.median_ms > settings.latency_budget_ms:
        metrics.update(infeasible=1, duration_s=time.perf_counter() - start)
        report(metrics)
        return metrics

    torch.manual_seed(settings.proxy.seed)
    model = nas.build_model(proxy_spec(spec, settings.scale), num_classes=data.num_classes,
                            img_size=data.img_size)

    def on_epoch(epoch: int, top1: float, loss: float) -> None:
        metrics.update(accuracy=top1, epoch=epoch, train_loss=loss, duration_s=time.perf_counter() - start)
        report(dict(metrics))

    train_and_evaluate(model, data, replace(settings.proxy, num_threads=settings.threads), on_epoch=on_epoch)
    return metrics

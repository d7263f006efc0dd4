"""What one candidate does during a search: proxy training, evaluation, latency.

Names load on first use (`trials.train_and_evaluate` imports torch then), so that the command line can
read `trials.fidelity` and `trials.data`'s checks without importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DatasetError": "sources", "TrialData": "data", "load_cifar10": "data", "load_dataset": "data",
    "load_imagefolder": "data", "make_synthetic": "data",
    "LatencyReference": "latency", "LatencyResult": "latency", "measure_latency": "latency",
    "ProxyConfig": "train", "StopTrial": "train", "TrainResult": "train", "TrialFailed": "train",
    "evaluate": "train", "train_and_evaluate": "train",
    "jacobian_covariance": "zero_cost", "naswot": "zero_cost", "synflow": "zero_cost",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'trials' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)

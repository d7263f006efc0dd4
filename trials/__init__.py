"""What one candidate does during a search: proxy training, evaluation, latency."""

from trials.data import DatasetError, TrialData, load_cifar10, load_dataset, load_imagefolder, make_synthetic
from trials.latency import LatencyResult, measure_latency
from trials.train import ProxyConfig, StopTrial, TrainResult, TrialFailed, evaluate, train_and_evaluate
from trials.zero_cost import jacobian_covariance, naswot, synflow

__all__ = [
    "DatasetError", "LatencyResult", "ProxyConfig", "StopTrial", "TrainResult", "TrialData",
    "TrialFailed", "evaluate", "load_cifar10", "load_dataset", "load_imagefolder",
    "jacobian_covariance", "make_synthetic", "measure_latency", "naswot", "synflow", "train_and_evaluate",
]

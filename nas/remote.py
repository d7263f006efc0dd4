"""What the search runs on Ray workers: the Tune trainable of a trial and the task of a promotion.

Kept apart from `nas.search` because Ray imports a remote function's module in every worker: this one
imports only the trial code, so that a worker does not also load Optuna, pandas and the searcher.
"""
from __future__ import annotations

import logging
import math
from typing import Any

from search_spaces.spec import ArchSpec
from trials.fidelity import Fidelity

from .count import count

__all__ = ["tune_trainable", "promotion_task"]

_logger = logging.getLogger(__name__)


def tune_trainable(config: dict[str, Any], data: Any = None, settings: Any = None) -> None:
    """A Ray Tune function trainable: one candidate, errors reported rather than raised so that the
    study records them."""
    import ray
    from ray import tune

    from trials.trial import run_trial

    node = ray.get_runtime_context().get_node_id()
    spec = ArchSpec.from_json(config["spec"])
    try:
        run_trial(spec, data, settings, report=lambda metrics: tune.report({**metrics, "node": node}),
                  latency_ms=config.get("latency_ms"))
    except Exception as err:  # a crashed candidate must not stop the search
        _logger.warning("trial %s failed: %s", config.get("trial_number"), err)
        tune.report({"error": f"{type(err).__name__}: {err}", "accuracy": 0.0, "epoch": 0, "node": node,
                     "flops": count(spec).flops, "latency_ms": math.nan})


def promotion_task(spec_json: str, data: Any, fidelity: Fidelity, seed: int, threads: int,
                   device: str) -> dict[str, Any]:
    """A Ray task: one promotion (`trials.trial.run_promotion`); errors propagate to the driver."""
    import ray

    from trials.trial import run_promotion

    result = run_promotion(ArchSpec.from_json(spec_json), data, fidelity, seed=seed, threads=threads, device=device)
    return {**result, "node": ray.get_runtime_context().get_node_id()}

"""Ray's share of a search: runtime start-up and the cost of scheduling one (empty) Tune trial.

Starts a local Ray runtime as the search does, then runs N no-op trials through Tune with the
search's settings (reuse_actors, one CPU each, 2 at a time) and reports the start-up time and the
wall time per trial. Run: python benchmarks/ray_overhead.py [--trials 40]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path


def noop(config: dict) -> None:
    from ray import tune
    tune.report({"accuracy": 0.0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from ray import tune

    start = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    tuner = tune.Tuner(tune.with_resources(noop, {"cpu": 1}),
                       tune_config=tune.TuneConfig(num_samples=args.trials, max_concurrent_trials=2, reuse_actors=True),
                       run_config=tune.RunConfig(storage_path=str(Path("/tmp/hybrid-nas-ray-bench").resolve()),
                                                 verbose=0))
    tuner.fit()
    per_trial = (time.perf_counter() - start) / args.trials
    ray.shutdown()
    print(f"ray.init: {startup:.2f} s; scheduling: {per_trial * 1000:.0f} ms per trial "
          f"({args.trials} no-op trials, 2 concurrent, reuse_actors)")
    out = Path(__file__).parent / "results" / "ray_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(dict(machine=platform.machine(), startup_s=startup, per_trial_s=per_trial,
                                   trials=args.trials), indent=2))


if __name__ == "__main__":
    main()

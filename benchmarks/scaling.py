"""Trials per hour with 1 and 2 Ray workers on this machine, and the search's peak memory.

The same fixed workload for every layout: N seeds (fitted to the budget, as the default search
trains them first), no early stopping, until all N are complete.
Layouts: 1 worker x 1 CPU, 2 workers x 1 CPU (the default on 2 cores), 1 worker x 2 CPUs.
Trials per hour count complete trials over the span from the first trial's start to the last one's
end (Ray's start-up is reported apart); memory is the peak PSS of the driver and all Ray processes.
Run: python benchmarks/scaling.py [--seeds van_b0,smt_t,...]
"""
from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from common import RESULTS, PeakMemory, write_result

from nas.budget import parse_flops
from nas.search import SearchConfig, completed_trials, run_search

LAYOUTS = ((1, 1), (2, 1), (1, 2))  # (workers, CPUs per trial)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="5gflops")
    parser.add_argument("--seeds", default="van_b0,van_b2,pelk_t,pelk_s,coatnet_0,coatnet_1,smt_t,smt_s")
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows = []
    for workers, cpus in LAYOUTS:
        run_dir = args.out / f"{workers}x{cpus}"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        seeds = tuple(args.seeds.split(","))
        cfg = SearchConfig(budget_flops=parse_flops(args.budget), out=run_dir, trials=len(seeds), workers=workers,
                           cpus_per_trial=cpus, seeds=seeds)
        start = time.perf_counter()
        with PeakMemory() as memory:
            study = run_search(cfg)
        wall = time.perf_counter() - start
        done = completed_trials(study)
        started = [t.datetime_start for t in study.trials if t.datetime_start and "rejected" not in t.user_attrs]
        span = (max(t.datetime_complete for t in done) - min(started)).total_seconds()
        rows.append(dict(workers=workers, cpus_per_trial=cpus, complete=len(done), span_s=span, wall_s=wall,
                         trials_per_hour=3600 * len(done) / span, peak_memory_mb=memory.peak_mb))
        print(f"{workers} worker(s) x {cpus} CPU: {len(done)} trials in {span:.0f} s "
              f"({rows[-1]['trials_per_hour']:.0f}/h), wall {wall:.0f} s, peak memory {memory.peak_mb:.0f} MB",
              flush=True)
    base = rows[0]["trials_per_hour"]
    print(f"\n{'layout':<14} {'trials/h':>9} {'x 1x1':>6} {'peak MB':>8}")
    for r in rows:
        print(f"{r['workers']} x {r['cpus_per_trial']} CPU{'':<5} {r['trials_per_hour']:>9.0f} "
              f"{r['trials_per_hour'] / base:>6.2f} {r['peak_memory_mb']:>8.0f}")
    two = rows[1]["trials_per_hour"] / base
    print(f"2 workers against 1: {two:.2f}x (target 1.8x: {'met' if two >= 1.8 else 'NOT met'})")
    write_result("scaling", dict(seeds=args.seeds, rows=rows, speedup_2_workers=two))


if __name__ == "__main__":
    main()

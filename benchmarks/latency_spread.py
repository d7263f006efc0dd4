"""How repeatable is the search's latency measurement? The coefficient of variation of its medians.

Measures one model's latency (the search's settings: batch 1, 224x224, 1 thread, 3 warm-ups, median
of 10) many times in this process and in fresh processes, and reports the CV of those medians
(target <= 3%). Run: python benchmarks/latency_spread.py [--seed-name smt_t] [--repeats 10]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import nas
from search_spaces import SEEDS
from trials.latency import measure_latency
from trials.trial import TrialSettings


def one_median(name: str) -> float:
    settings = TrialSettings()
    model = nas.build_model(SEEDS[name])
    return measure_latency(model, threads=settings.latency_threads, warmup=settings.latency_warmup,
                           runs=settings.latency_runs).median_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed-name", default="smt_t")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(one_median(args.seed_name))
        return
    within = [one_median(args.seed_name) for _ in range(args.repeats)]
    across = [float(subprocess.run([sys.executable, __file__, "--child", "--seed-name", args.seed_name],
                                   capture_output=True, text=True, check=True).stdout.split()[-1])
              for _ in range(max(3, args.repeats // 2))]
    rows = {}
    for label, values in (("within one process", within), ("across processes", across)):
        cv = statistics.stdev(values) / statistics.mean(values) * 100
        rows[label] = dict(medians_ms=values, cv_percent=cv)
        print(f"{label:<20} median of medians {statistics.median(values):7.2f} ms, CV {cv:4.2f}% "
              f"({'met' if cv <= 3 else 'MISSED'} target 3%)")
    out = Path(__file__).parent / "results" / "latency_spread.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(dict(machine=platform.machine(), seed=args.seed_name, rows=rows), indent=2))


if __name__ == "__main__":
    main()

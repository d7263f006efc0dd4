"""Does the default sampler find a better front than random sampling, and than the seeds alone?

One search trains the 13 seeds (the default search's first trials, fitted to the budget). Each
repeat then continues a copy of that study with the default sampler (TPE) or random sampling, with
its own sampler seed and the same data and training seed, until N trials are complete, as
`scripts/search.py` would. The hypervolume of each front (accuracy, FLOPs, latency; normalised by
100 %, the budget and the worst latency seen in any run) is compared: sampler against sampler
(Mann-Whitney U), and each against the seeds' front alone (sign test over the repeats).
Run: python benchmarks/search_efficiency.py [--repeats 4] [--trials 24] [--samplers tpe,random]
"""
from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import RESULTS, PeakMemory, write_result
from scipy.stats import binomtest, mannwhitneyu

from nas.budget import parse_flops
from nas.results import hypervolume, normalised_objectives, trials_frame
from nas.search import SearchConfig, open_study, run_search


def complete(run_dir: Path):
    frame = trials_frame(open_study(run_dir))
    return frame[frame.state == "COMPLETE"].dropna(subset=["accuracy", "flops", "latency_ms"])


def front_hypervolume(frame, budget: float, worst_latency: float) -> float:
    return hypervolume(normalised_objectives(frame, budget, worst_latency), np.ones(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="5gflops")
    parser.add_argument("--trials", type=int, default=24, help="complete trials per search, seeds included")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--samplers", default="tpe,random")
    parser.add_argument("--out", type=Path, default=RESULTS / "search_efficiency")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    budget = parse_flops(args.budget)
    base = SearchConfig(budget_flops=budget, out=args.out / "seeds", trials=13)

    ran = False  # runs already in --out are reused; memory is that of the runs made now
    with PeakMemory() as memory:
        if not (base.out / "study.db").exists():
            ran = True
            base.out.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            run_search(base)
            print(f"seeds: {time.perf_counter() - start:.0f} s, peak memory {memory.peak_mb:.0f} MB", flush=True)
        runs: dict[str, list[Path]] = {}
        for sampler in args.samplers.split(","):
            for repeat in range(args.repeats):
                run_dir = args.out / f"{sampler}_{repeat}"
                if not run_dir.exists():
                    ran = True
                    run_dir.mkdir(parents=True)
                    shutil.copy(base.out / "study.db", run_dir / "study.db")
                    cfg = replace(base, out=run_dir, trials=args.trials, sampler=sampler, sampler_seed=repeat,
                                  resume=True)
                    cfg.save(run_dir / "config.json")
                    start = time.perf_counter()
                    run_search(cfg)
                    print(f"{sampler} repeat {repeat}: {time.perf_counter() - start:.0f} s", flush=True)
                runs.setdefault(sampler, []).append(run_dir)

    frames = {run: complete(run) for paths in runs.values() for run in paths}
    seeds_frame = complete(base.out)
    worst = 1.1 * max(f.latency_ms.max() for f in [*frames.values(), seeds_frame])
    seeds_hv = front_hypervolume(seeds_frame, budget, worst)
    volumes = {s: [front_hypervolume(frames[r], budget, worst) for r in paths] for s, paths in runs.items()}
    print(f"\nhypervolume after {args.trials} complete trials ({len(seeds_frame)} seeds + searched), "
          f"{args.repeats} repeats; seeds alone {seeds_hv:.4f}")
    print(f"{'sampler':<8} {'median':>8} {'min':>8} {'max':>8} {'> seeds':>8} {'sign p':>7}")
    summary = {}
    for s, v in volumes.items():
        better = int(sum(x > seeds_hv for x in v))
        p = binomtest(better, len(v), 0.5, alternative="greater").pvalue
        summary[s] = dict(hypervolumes=v, median=statistics.median(v), better_than_seeds=better, sign_p=p)
        print(f"{s:<8} {statistics.median(v):>8.4f} {min(v):>8.4f} {max(v):>8.4f} {better:>5}/{len(v):<2} {p:>7.3f}")
    names = list(volumes)
    test = None
    if len(names) == 2:
        u = mannwhitneyu(volumes[names[0]], volumes[names[1]], alternative="two-sided")
        greater = mannwhitneyu(volumes[names[0]], volumes[names[1]], alternative="greater").pvalue
        test = dict(pair=names, u=float(u.statistic), p=float(u.pvalue), p_greater=float(greater))
        print(f"{names[0]} vs {names[1]}: Mann-Whitney U {u.statistic:.1f}, two-sided p = {u.pvalue:.3f}, "
              f"one-sided ({names[0]} better) p = {greater:.3f}")
    peak = memory.peak_mb if ran else None
    if ran:
        print(f"peak memory of the searches (driver + Ray processes): {peak:.0f} MB")
    write_result("search_efficiency", dict(trials=args.trials, repeats=args.repeats, seeds_hypervolume=seeds_hv,
                                           worst_latency_ms=worst, samplers=summary, test=test,
                                           peak_memory_mb=peak))


if __name__ == "__main__":
    main()

"""Share of sampled candidates over the FLOP budget, and how far the rest reach, at 0.1 to 20 GFLOPs.

A draw over budget costs a count (about a millisecond) and a row in the study, not a training run; but
if nearly every draw is over, a small-budget search spends its time drawing. For each budget this
samples the space the search uses (`budget_limits` with the seeds fitted to the budget) and the whole
space, with Optuna's random sampler (what the first TPE trials are) and with the search's TPE told
each rejection the way the search tells it. Prints, per budget: rejected share, draws per second,
and the accepted candidates' FLOPs as a fraction of the budget (10th / 50th / 90th percentile).
Run: python benchmarks/rejection_rate.py [--draws 500]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import optuna
from common import write_result

import nas
from nas.budget import budget_limits
from nas.search import fit_seeds, make_sampler
from search_spaces import SEEDS
from search_spaces.space import SpaceLimits, sample_spec

BUDGETS = (0.1e9, 0.3e9, 1e9, 5e9, 20e9)


def draw(limits: SpaceLimits, budget: float, sampler: str, draws: int) -> dict:
    """`draws` candidates; a rejected one is told to the sampler as the search tells it (accuracy 0)."""
    study = optuna.create_study(sampler=make_sampler(sampler, 0), directions=["maximize", "minimize", "minimize"])
    flops = []
    start = time.perf_counter()
    for _ in range(draws):
        trial = study.ask()
        counted = nas.count(sample_spec(trial, limits)).flops
        flops.append(counted)
        # accepted draws get a stand-in accuracy that grows with size, as trained ones tend to
        accuracy = 0.0 if counted > budget else 50 + 10 * np.log10(counted / 1e7)
        study.tell(trial, [accuracy, counted, 1e9 if counted > budget else counted / 1e8])
    elapsed = time.perf_counter() - start
    flops_np = np.array(flops)
    accepted = flops_np[flops_np <= budget] / budget
    quantiles = np.percentile(accepted, [10, 50, 90]).round(2).tolist() if len(accepted) else [None] * 3
    return dict(rejected=float((flops_np > budget).mean()), draws_per_s=draws / elapsed, accepted_fraction=quantiles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--draws", type=int, default=500)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    print(f"{'budget G':>8} {'space':<7} {'sampler':<7} {'rejected':>8} {'draws/s':>8} {'accepted FLOPs/budget':>22}")
    for budget in BUDGETS:
        seeds, _ = fit_seeds(tuple(SEEDS), budget)
        spaces = {"budget": budget_limits(budget, keep=tuple(s.spec for s in seeds)), "whole": SpaceLimits()}
        for (space, limits), sampler in [(s, "random") for s in spaces.items()] + [(("budget", spaces["budget"]),
                                                                                      "tpe")]:
            row = dict(budget_g=budget / 1e9, space=space, sampler=sampler, **draw(limits, budget, sampler, args.draws))
            rows.append(row)
            q = "/".join("-" if v is None else f"{v:.2f}" for v in row["accepted_fraction"])
            print(f"{budget / 1e9:>8.1f} {space:<7} {sampler:<7} {row['rejected']:>8.3f} {row['draws_per_s']:>8.0f} "
                  f"{q:>22}")
    write_result("rejection_rate", dict(draws=args.draws, rows=rows))


if __name__ == "__main__":
    main()

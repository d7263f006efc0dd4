"""Do the seeds' proxy accuracies differ by more than one architecture's spread over training seeds?

Trains the default proxy (as the search does) of several seeds, each with 3 training seeds, on the
embedded synthetic dataset; prints mean, spread (max - min) per architecture, the range of the means
across architectures, and whether that range exceeds the largest single-architecture spread.
Run: python benchmarks/seed_separation.py [--seeds van_b0,smt_t,coatnet_0,pelk_t] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from itertools import combinations
from pathlib import Path

import torch

import nas
from nas.budget import fit_to_budget
from search_spaces import SEEDS
from trials.data import load_dataset
from trials.fidelity import PROXY
from trials.train import ProxyConfig, train_and_evaluate

BUDGET_FLOPS = 5e9  # the quick start's search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="van_b0,van_b2,smt_t,coatnet_0,pelk_t")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, val = PROXY.default_sample("synthetic")
    data = load_dataset("synthetic", img_size=PROXY.img_size, max_train=train, max_val=val)
    results: dict[str, list[float]] = {}
    for name in args.seeds.split(","):
        spec, _ = fit_to_budget(SEEDS[name], BUDGET_FLOPS)
        results[name] = []
        for training_seed in range(args.repeats):
            start = time.perf_counter()
            torch.manual_seed(training_seed)
            model = nas.build_model(PROXY.model_spec(spec), num_classes=data.num_classes, img_size=data.img_size)
            cfg = ProxyConfig.from_fidelity(PROXY, seed=training_seed)
            top1 = train_and_evaluate(model, data, cfg).final_top1
            results[name].append(top1)
            print(f"{name:<10} seed {training_seed}: {top1:5.1f}%  ({time.perf_counter() - start:.0f} s)", flush=True)
    rows = {n: dict(mean=statistics.mean(v), spread=max(v) - min(v), runs=v) for n, v in results.items()}
    print(f"\n{'seed':<10} {'mean %':>7} {'spread':>7}")
    for n, r in rows.items():
        print(f"{n:<10} {r['mean']:>7.1f} {r['spread']:>7.1f}")
    means = [r["mean"] for r in rows.values()]
    worst_spread = max(r["spread"] for r in rows.values())
    separated = sum(abs(rows[a]["mean"] - rows[b]["mean"]) > max(rows[a]["spread"], rows[b]["spread"])
                    for a, b in combinations(rows, 2))
    pairs = len(list(combinations(rows, 2)))
    verdict = max(means) - min(means) > worst_spread
    print(f"range of means {max(means) - min(means):.1f} vs largest spread {worst_spread:.1f} -> "
          f"{'separated' if verdict else 'NOT separated'}; pairs separated beyond both spreads: {separated}/{pairs}")
    out = Path(__file__).parent / "results" / "seed_separation.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(dict(machine=platform.machine(), threads=args.threads, rows=rows,
                                   range=max(means) - min(means), largest_spread=worst_spread,
                                   pairs_separated=separated, pairs=pairs), indent=2))


if __name__ == "__main__":
    main()

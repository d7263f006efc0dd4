"""Do identical architectures get the same measured latency in one search? The spread within a default search.

Runs the default search (`--budget 5gflops`, 24 trials, 2 workers on this machine's cores; no
promotions, which measure nothing) with four published seeds, fitted to the budget, each queued three
times as separate trials among the search's own, so that each is measured three times by whichever
worker is free, beside whatever the other worker is doing. Reports, per architecture, the three
latencies and their spread (largest / smallest - 1). `--no-gate` measures as before the latency gate
(`trials.latency.LatencyGate`): beside the other trial's training.

    python benchmarks/latency_repeat.py [--no-gate] [--trials 24]
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from common import write_result

REPEATED = ("van_b2", "smt_s", "coatnet_0", "pelk_t")
COPIES = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-gate", action="store_true", help="measure beside training, as before the gate")
    parser.add_argument("--trials", type=int, default=24)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    import pandas as pd

    import nas.search as search
    from nas.config import SearchConfig
    from search_spaces.space import spec_to_params

    if args.no_gate:
        search.LatencyGate = lambda: None  # the trials' settings then carry no gate
    run = Path(tempfile.mkdtemp(prefix="latency-repeat-")) / "run"
    run.mkdir(parents=True)
    cfg = SearchConfig(budget_flops=5e9, out=run, trials=args.trials)
    fitted, _ = search.fit_seeds(REPEATED, cfg.budget_flops)
    study = search.open_study(run)
    for copy in range(COPIES):  # interleaved: each copy runs at a different moment of the search
        for seed in fitted:
            study.enqueue_trial(spec_to_params(seed.spec), user_attrs={"seed": f"{seed.name}#{copy + 1}"},
                                skip_if_exists=False)
    search.run_search(cfg.__class__(**{**cfg.__dict__, "seeds": ()}))

    frame = pd.read_csv(run / "trials.csv")
    frame = frame[frame.seed.fillna("").str.contains("#")]
    rows = []
    for name in REPEATED:
        values = frame[frame.seed.str.startswith(name + "#")].latency_ms.dropna().tolist()
        spread = max(values) / min(values) - 1 if values else float("nan")
        rows.append(dict(arch=name, latencies_ms=values, spread=spread))
        print(f"{name:10s} {' '.join(f'{v:7.1f}' for v in values)} ms   spread {100 * spread:5.1f}%")
    write_result("latency_repeat" + ("_no_gate" if args.no_gate else ""),
                 dict(gate=not args.no_gate, trials=args.trials, run=str(run), rows=rows))


if __name__ == "__main__":
    main()

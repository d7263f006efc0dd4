"""How well does a latency table predict whole models? Predicted against measured, on held-out architectures.

Draws N random architectures of the whole space (seed other than the table's), spread evenly over
log-FLOPs between 0.1 and 10 GFLOPs, the first ones forced to hold each block type, so that every
type is covered; predicts each with `nas.predict_latency` (timing the call on a cold cache), then
measures each in a fresh process that does nothing else (batch and threads of the table, channels_last,
5 warm-ups, median of 15; the median of three such readings taken in separate sweeps over all of them).
Reports the share within +-10 %, the median and worst error, Spearman's rank correlation, overall and
for attention-heavy (T, M blocks), large-kernel (L, P) and other architectures.

    python scripts/latency_table.py --threads 1 --out cpu1.json
    python benchmarks/latency_predictor.py --table cpu1.json [--archs 60] [--seed 1]
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS

from nas.count import count
from nas.latency import LatencyTable, predict_latency
from search_spaces.space import PATTERNS, RandomChoiceTrial, sample_spec
from search_spaces.spec import BLOCK_TYPES, ArchSpec


def draw_archs(n: int, seed: int, gflops: tuple[float, float] = (0.1, 10.0)) -> list[ArchSpec]:
    """n random architectures, one per equal log-FLOPs bin in turn; the first 2 x 13 each hold a given
    block type in a random stage (every type twice), the rest are unconstrained."""
    rng = random.Random(seed)
    lo, hi = math.log(gflops[0]), math.log(gflops[1])
    bins = 6
    archs = []
    for i in range(n):
        b = i % bins
        low, high = math.exp(lo + (hi - lo) * b / bins), math.exp(lo + (hi - lo) * (b + 1) / bins)
        fixed = {}
        if i < 2 * len(BLOCK_TYPES):
            fixed[f"s{rng.randint(1, 4)}_pattern"] = next(p for p, types in PATTERNS.items()
                                                          if types == (BLOCK_TYPES[i % len(BLOCK_TYPES)],))
        while True:
            spec = sample_spec(RandomChoiceTrial(rng, fixed))
            if low * 1e9 <= count(spec).flops <= high * 1e9:
                archs.append(spec)
                break
    return archs


def measure(specs_file: Path, threads: int, batch: int, sweeps: int = 3) -> list[float]:
    """In this (fresh) process: each spec's latency in ms, the median of `sweeps` measurements made in
    separate sweeps over all specs (each: a new model, 5 warm-ups, median of 15 runs), so that a burst
    of load on the shared machine spoils one sweep's reading, not the result."""
    import nas
    from trials.latency import measure_latency

    specs = [ArchSpec.from_dict(d) for d in json.loads(specs_file.read_text())]
    measure_latency(nas.build_model(specs[0]), threads=threads, copy_model=False)  # warms the process up
    readings: list[list[float]] = [[] for _ in specs]
    for sweep in range(sweeps):
        for i, spec in enumerate(specs):
            model = nas.build_model(spec)
            readings[i].append(measure_latency(model, batch_size=batch, threads=threads, warmup=5, runs=15,
                                               copy_model=False).median_ms)
            del model
            print(f"[sweep {sweep + 1}/{sweeps}, {i + 1}/{len(specs)}] {spec.layout} {readings[i][-1]:.2f} ms",
                  file=sys.stderr, flush=True)
    return [statistics.median(r) for r in readings]


def group(spec: ArchSpec) -> str:
    codes = set(spec.layout.replace("-", ""))
    if codes & {"T", "M"}:
        return "attention (T, M)"
    if codes & {"L", "P"}:
        return "large kernel (L, P)"
    return "other"


def summary(pred: list[float], meas: list[float]) -> dict[str, float]:
    from scipy.stats import spearmanr

    errors = [abs(p - m) / m for p, m in zip(pred, meas)]
    return dict(n=len(errors), within_10pct=sum(e <= 0.10 for e in errors) / len(errors),
                median_error=statistics.median(errors), worst_error=max(errors),
                spearman=float(spearmanr(pred, meas).statistic) if len(errors) > 2 else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--archs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1, help="architecture draw (the table's parts use its own)")
    parser.add_argument("--measured", type=Path, metavar="RESULT_JSON",
                        help="take the measured latencies from an earlier run's results (same architectures: same "
                             "--archs and --seed, same threads and batch) instead of measuring again")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child: specs file to time
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.threads, args.batch)))
        return

    table = LatencyTable.load(args.table)
    archs = draw_archs(args.archs, args.seed)
    covered = {b.type for s in archs for st in s.stages for b in st.blocks}
    assert covered == set(BLOCK_TYPES), f"block types not covered: {set(BLOCK_TYPES) - covered}"
    predicted, call_ms = [], []
    for spec in archs:
        table._features.clear()  # a cold cache: what a new candidate costs
        start = time.perf_counter()
        predicted.append(predict_latency(spec, table))
        call_ms.append(1000 * (time.perf_counter() - start))
    if args.measured:
        earlier = json.loads(args.measured.read_text())
        assert [a["spec"] for a in earlier["archs"]] == [s.to_dict() for s in archs], "other architectures"
        assert (earlier["threads"], earlier["batch"]) == (table.threads, table.batch), "other threads or batch"
        measured = [a["measured_ms"] for a in earlier["archs"]]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            specs_file = Path(tmp) / "specs.json"
            specs_file.write_text(json.dumps([s.to_dict() for s in archs]))
            child = subprocess.run([sys.executable, __file__, "--measure", str(specs_file), "--threads",
                                    str(table.threads), "--batch", str(table.batch), "--table", str(args.table)],
                                   check=True, stdout=subprocess.PIPE, text=True)
        measured = json.loads(child.stdout.strip().splitlines()[-1])

    groups = {"all": list(range(len(archs)))}
    for i, spec in enumerate(archs):
        groups.setdefault(group(spec), []).append(i)
    rows = {name: summary([predicted[i] for i in idx], [measured[i] for i in idx]) for name, idx in groups.items()}
    print(f"table {args.table}: {table.describe()}; {len(archs)} architectures, "
          f"{min(count(s).flops for s in archs) / 1e9:.2f}-{max(count(s).flops for s in archs) / 1e9:.2f} GFLOPs, "
          f"{min(measured):.1f}-{max(measured):.1f} ms measured")
    print(f"{'group':22s} {'n':>3s} {'within 10%':>10s} {'median err':>10s} {'worst err':>9s} {'Spearman':>8s}")
    for name, r in rows.items():
        print(f"{name:22s} {r['n']:3d} {100 * r['within_10pct']:9.0f}% {100 * r['median_error']:9.1f}% "
              f"{100 * r['worst_error']:8.1f}% {r['spearman']:8.3f}")
    print(f"predict_latency: median {statistics.median(call_ms):.2f} ms a call (cold cache), max {max(call_ms):.2f} ms")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"latency_predictor_{table.device}_{table.threads}t.json"
    out.write_text(json.dumps(dict(
        table=str(args.table), table_meta=table.meta, measured_from=str(args.measured or "this run"),
        threads=table.threads, batch=table.batch, summary=rows,
        predict_call_ms=dict(median=statistics.median(call_ms), max=max(call_ms)),
        archs=[dict(layout=s.layout, gflops=count(s).flops / 1e9, predicted_ms=p, measured_ms=m, group=group(s),
                    spec=s.to_dict()) for s, p, m in zip(archs, predicted, measured)]), indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

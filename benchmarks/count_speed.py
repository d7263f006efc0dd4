"""Time and memory of `nas.count` per seed against torch.utils.flop_counter on a meta-device model.

Prints a table (median of repeated runs, milliseconds; peak Python-heap allocation of one call,
tracemalloc, which also sees the meta tensors' bookkeeping) and writes JSON to benchmarks/results/.
Run: python benchmarks/count_speed.py [--repeats 20]
"""
from __future__ import annotations

import argparse
import tracemalloc

import torch
from common import median_ms, write_result
from torch.utils.flop_counter import FlopCounterMode

import nas
from nas.ops.attention import MultiHeadSelfAttention
from nas.ops.base import dense_convolutions
from search_spaces import SEEDS


def torch_count(spec) -> float:
    """Build on the meta device (no memory, no compute) and count with torch's FLOP counter."""
    with torch.device("meta"):
        model = nas.build_model(spec)
        for m in model.modules():
            if isinstance(m, MultiHeadSelfAttention):
                m.fused_attn = False
        counter = FlopCounterMode(display=False)
        with counter, dense_convolutions():
            model(torch.randn(1, 3, 224, 224))
    return counter.get_total_flops() / 2


def peak_kib(fn) -> float:
    """Peak memory traced by tracemalloc during one call, in KiB."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rows = []
    print(f"{'seed':<10} {'nas.count ms':>13} {'flop_counter ms':>16} {'speed-up':>9} {'GMACs':>8} {'agree':>6} "
          f"{'count KiB':>10} {'counter KiB':>12}")
    for name, spec in SEEDS.items():
        ours = median_ms(lambda spec=spec: nas.count(spec), args.repeats)
        reference = median_ms(lambda spec=spec: torch_count(spec), max(1, args.repeats // 10), warmup=0)
        agree = nas.count(spec).flops / torch_count(spec)
        memory = peak_kib(lambda spec=spec: nas.count(spec)), peak_kib(lambda spec=spec: torch_count(spec))
        rows.append(dict(seed=name, count_ms=ours, flop_counter_ms=reference, speedup=reference / ours,
                         gflops=nas.count(spec).flops / 1e9, ratio=agree, count_kib=memory[0],
                         flop_counter_kib=memory[1]))
        print(f"{name:<10} {ours:>13.2f} {reference:>16.1f} {reference / ours:>8.0f}x "
              f"{rows[-1]['gflops']:>8.3f} {agree:>6.3f} {memory[0]:>10.0f} {memory[1]:>12.0f}")
    worst = max(r["count_ms"] for r in rows)
    print(f"slowest nas.count: {worst:.2f} ms (target <= 50 ms) -> {'met' if worst <= 50 else 'MISSED'}")
    write_result("count_speed", dict(rows=rows))


if __name__ == "__main__":
    main()

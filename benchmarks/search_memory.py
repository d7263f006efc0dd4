"""Wall time and peak memory of the default search (`scripts/search.py --budget 5gflops`).

Runs the default configuration into a fresh run directory and samples the memory (PSS) of the
driver and all Ray processes every half second.
Run: python benchmarks/search_memory.py [--budget 5gflops]
"""
from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

from common import RESULTS, PeakMemory, write_result

from nas.budget import parse_flops
from nas.results import trials_frame
from nas.search import SearchConfig, run_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="5gflops")
    parser.add_argument("--out", type=Path, default=RESULTS / "default_search")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    start = time.perf_counter()
    with PeakMemory() as memory:
        study = run_search(SearchConfig(budget_flops=parse_flops(args.budget), out=args.out))
    wall = time.perf_counter() - start
    states = trials_frame(study).state.value_counts().to_dict()
    print(f"default search: {wall:.0f} s wall, trials {states}, peak memory {memory.peak_mb:.0f} MB (PSS, "
          "driver + Ray processes)")
    write_result("search_memory", dict(wall_s=wall, states=states, peak_memory_mb=memory.peak_mb))


if __name__ == "__main__":
    main()

"""Helpers the benchmark scripts share: timing and writing results."""
from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn` in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages (Ray's object store, libraries) split among their users, so
    that summing over processes does not count them once per process as RSS would."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration):  # ended meanwhile, or not ours to read
        return 0


def tree_pids(root: int) -> set[int]:
    """Process `root` and all its descendants (Linux /proc)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:  # the process ended meanwhile
            continue
    tree, frontier = {root}, {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier and pid not in tree}
        tree |= frontier
    return tree


def _tree_memory_mb(root: int) -> float:
    """Memory (PSS) of process `root` and all its descendants (Linux /proc), in MB."""
    return sum(pss_bytes(pid) for pid in tree_pids(root)) / 2**20


class PeakMemory:
    """Samples the memory (PSS) of this process and its descendants (Ray's workers) in a thread:
    `with PeakMemory() as m: ...; m.peak_mb`. Subclasses sample more by overriding `sample`."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s, self.peak_mb = interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        self.peak_mb = max(self.peak_mb, _tree_memory_mb(os.getpid()))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_result(name: str, data: dict[str, Any]) -> Path:
    """benchmarks/results/NAME.json, with the machine and library versions."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(dict(machine=platform.machine(), processor=platform.processor(),
                                    torch=torch.__version__, threads=torch.get_num_threads(),
                                    date=time.strftime("%Y-%m-%d"), **data), indent=2))
    print(f"wrote {path}")
    return path

"""Helpers the benchmark scripts share: timing and writing results."""
from __future__ import annotations

import json
import platform
import statistics
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


def write_result(name: str, data: dict[str, Any]) -> Path:
    """benchmarks/results/NAME.json, with the machine and library versions."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(dict(machine=platform.machine(), processor=platform.processor(),
                                    torch=torch.__version__, threads=torch.get_num_threads(),
                                    date=time.strftime("%Y-%m-%d"), **data), indent=2))
    print(f"wrote {path}")
    return path

"""Wall time and memory of the default search (`scripts/search.py --budget 5gflops`), per process and phase.

Runs the default configuration (promotions included) into a fresh run directory and samples the memory
(PSS: shared pages split among their users, so the sum over processes counts them once) of the driver
and every process it starts (Ray's own and its workers) every `--interval` seconds. Processes are named
by their title (`ray::ImplicitFunc.train` is a Tune trial actor, `ray::IDLE` an idle worker, `raylet`,
`gcs_server`, ...). Phases come from the search's own log lines: start-up (before Ray), search,
promotions, shutdown.

Reported: the peak of the sum and what each process held at that moment; each kind of process's peak,
and a trial worker at rest (a fresh Ray worker that has imported the trial's code, no trial run).
Run: python benchmarks/search_memory.py [--budget 5gflops] [--promote 2]
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

from common import RESULTS, PeakMemory, pss_bytes, tree_pids, write_result

_PHASES = (("run directory", "search"), ("promoting", "promotions"))


def process_kind(pid: int, driver: int) -> str:
    """A short name for a process of the search: its Ray title, or its executable's name."""
    if pid == driver:
        return "driver"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "?"
    first = argv[0].decode(errors="replace")
    if first.startswith("ray::"):
        return first.split()[0]
    text = " ".join(a.decode(errors="replace") for a in argv)
    for name in ("gcs_server", "raylet", "dashboard/agent", "runtime_env/agent", "log_monitor", "monitor.py",
                 "default_worker"):
        if name in text:
            return "ray " + name.split("/")[0].removesuffix(".py")
    return Path(first).name


class PhaseLog(logging.Handler):
    """Notes when the search's log enters each phase."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = "start-up"

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for marker, phase in _PHASES:
            if message.startswith(marker):
                self.phase = phase


class Sampler(PeakMemory):
    """Samples every descendant's PSS in a thread; keeps the peak sum with its breakdown, and per kind
    of process and phase the largest single process and the largest sum."""

    def __init__(self, phases: PhaseLog, interval_s: float) -> None:
        super().__init__(interval_s)
        self.phases = phases
        self.driver = os.getpid()
        self.peak_phase, self.at_peak = "", {}
        self.largest: dict[tuple[str, str], float] = defaultdict(float)  # (phase, kind) -> one process, MB
        self.summed: dict[tuple[str, str], float] = defaultdict(float)  # (phase, kind) -> all of that kind
        self.phase_peak: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)  # kind -> most processes at once

    def sample(self) -> None:
        phase = self.phases.phase
        sample = {pid: pss_bytes(pid) / 2**20 for pid in tree_pids(self.driver)}
        kinds: dict[str, list[float]] = defaultdict(list)
        for pid, mb in sample.items():
            kinds[process_kind(pid, self.driver)].append(mb)
        total = sum(sample.values())
        for kind, values in kinds.items():
            self.largest[phase, kind] = max(self.largest[phase, kind], max(values))
            self.summed[phase, kind] = max(self.summed[phase, kind], sum(values))
            self.count[kind] = max(self.count[kind], len(values))
        self.phase_peak[phase] = max(self.phase_peak[phase], total)
        if total > self.peak_mb:
            self.peak_mb, self.peak_phase = total, phase
            self.at_peak = {kind: (len(v), sum(v)) for kind, v in kinds.items()}


def _worker_at_rest() -> float:
    """PSS (MB) of a fresh Ray worker once it has imported what a trial runs."""
    import ray

    @ray.remote(num_cpus=1)
    def imported() -> float:
        import ray.tune  # noqa: F401  (a Tune trial actor's own class)

        import nas.remote  # noqa: F401  (the module of the trainable: what Ray imports in a worker)
        import trials.trial  # noqa: F401  (what the trainable imports)

        time.sleep(1.0)
        return pss_bytes(os.getpid()) / 2**20

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    try:
        return ray.get(imported.remote())
    finally:
        ray.shutdown()


def main() -> None:
    from nas.budget import parse_flops
    from nas.results import trials_frame
    from nas.search import DEFAULT_PROMOTE, SearchConfig, run_search

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="5gflops")
    parser.add_argument("--promote", type=int, default=DEFAULT_PROMOTE, help="as the command's (default %(default)s)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=RESULTS / "default_search")
    parser.add_argument("--label", default="search_memory", help="name of the result file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    phases = PhaseLog()
    logging.getLogger().addHandler(phases)
    rest_mb = _worker_at_rest()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    start = time.perf_counter()
    with Sampler(phases, args.interval) as memory:
        study = run_search(SearchConfig(budget_flops=parse_flops(args.budget), out=args.out, promote=args.promote))
        phases.phase = "shutdown"
    wall = time.perf_counter() - start
    states = trials_frame(study).state.value_counts().to_dict()

    print(f"\ndefault search: {wall:.0f} s wall, trials {states}")
    print(f"peak {memory.peak_mb:.0f} MB (PSS, driver + Ray processes) during {memory.peak_phase}; at that moment:")
    for kind, (n, mb) in sorted(memory.at_peak.items(), key=lambda kv: -kv[1][1]):
        print(f"  {kind:32s} {n:2d} process(es) {mb:7.0f} MB")
    print("per phase: peak sum; per kind of process, the largest one (and all of that kind together):")
    rows = []
    for phase in memory.phase_peak:
        print(f"  {phase}: {memory.phase_peak[phase]:.0f} MB")
        for (p, kind), mb in sorted(memory.largest.items(), key=lambda kv: -kv[1]):
            if p == phase:
                print(f"    {kind:32s} {mb:7.0f} MB ({memory.summed[p, kind]:.0f} MB together)")
                rows.append(dict(phase=p, kind=kind, largest_mb=mb, summed_mb=memory.summed[p, kind]))
    print(f"a trial worker at rest (fresh Ray worker, trial code imported): {rest_mb:.0f} MB")
    write_result(args.label, dict(wall_s=wall, states=states, peak_memory_mb=memory.peak_mb,
                                  peak_phase=memory.peak_phase, at_peak=memory.at_peak,
                                  phase_peak_mb=memory.phase_peak, processes=rows, most_at_once=memory.count,
                                  worker_at_rest_mb=rest_mb))


if __name__ == "__main__":
    main()

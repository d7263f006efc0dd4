"""How fast the search command answers `--help` and bad input (target: under 1 s each).

Each case runs `python scripts/search.py ...` in a fresh process `--repeats` times, alternating the
cases; reported: the median wall time, the exit code and the first line of stderr, beside a bare
`python -c pass` for the interpreter's own start-up.
Run: python benchmarks/cli_speed.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import write_result

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "python -c pass (start-up only)": ["-c", "pass"],
    "--help": ["--help"],
    "--budget abc": ["--budget", "abc"],
    "--budget 10mflops (under the space's floor)": ["--budget", "10mflops"],
    "--workers 0": ["--budget", "5G", "--workers", "0"],
    "--dataset cifar10 without --data-dir": ["--budget", "5G", "--dataset", "cifar10"],
    "--dataset imagefolder --data-dir /no/such/dir": ["--budget", "5G", "--dataset", "imagefolder",
                                                      "--data-dir", "/no/such/dir"],
    "--out /proc/x (unwritable)": ["--budget", "5G", "--out", "/proc/x"],
    "--device cuda (no GPU here)": ["--budget", "5G", "--device", "cuda"],
}


def run(args: list[str]) -> tuple[float, int, str]:
    argv = args if args[0] == "-c" else [str(ROOT / "scripts" / "search.py"), *args]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    first = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or [""])[0]
    return wall, done.returncode, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    outcome = {}
    for _ in range(args.repeats):
        for name, case in CASES.items():
            wall, code, first = run(case)
            times[name].append(wall)
            outcome[name] = (code, first)
    rows = []
    print(f"{'case':50s} {'median s':>8s} {'max s':>6s}  exit  first line")
    for name, walls in times.items():
        code, first = outcome[name]
        rows.append(dict(case=name, median_s=statistics.median(walls), max_s=max(walls), exit=code, first_line=first))
        print(f"{name:50s} {statistics.median(walls):8.2f} {max(walls):6.2f}  {code:4d}  {first[:90]}")
    write_result("cli_speed", dict(repeats=args.repeats, cases=rows))


if __name__ == "__main__":
    main()

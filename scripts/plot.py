"""Regenerate a run's report (pareto.html, pareto.json, trials table) from its study, running or finished."""
import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path, help="the run directory (runs/NAME)")
    parser.add_argument("--png", action="store_true", help="also write pareto.png (needs kaleido and a Chromium)")
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv", help="trials table format")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from nas.config import SearchConfig
    from nas.report import write_png, write_run
    from nas.search import open_study

    if not (args.run / "study.db").is_file():
        print(f"plot.py: error: {args.run}: no study.db; give the directory of a search run", file=sys.stderr)
        return 2
    config = args.run / "config.json"
    cfg = SearchConfig.load(config) if config.is_file() else None
    budget = cfg.budget_flops if cfg else None
    frame = write_run(open_study(args.run), args.run, budget, cfg and cfg.latency_budget_ms, fmt=args.format,
                      latency_source=cfg and cfg.latency_source())
    print(args.run / "pareto.html")
    if args.png:
        png = write_png(frame, args.run / "pareto.png", budget)
        if png is None:
            print("plot.py: no PNG: install kaleido and Chromium (see README)", file=sys.stderr)
            return 1
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())

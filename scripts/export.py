"""Export architectures of a search run as timm model folders (config.json, model.safetensors, card)."""
import argparse
import logging
import sys
from pathlib import Path

from nas.export import ExportError, export_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path, help="the run directory (runs/NAME)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--top", type=int, default=3, help="the K most accurate of the Pareto front (default 3)")
    group.add_argument("--trial", type=int, nargs="+", help="trial numbers (the 'number' column of trials.csv)")
    parser.add_argument("--out", type=Path, help="where the folders go (default RUN/exports)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = export_run(args.run, top=args.top, trials=args.trial, out=args.out)
    except ExportError as err:
        print(f"export.py: error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

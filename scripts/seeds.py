"""Print the seed architectures' parameter and FLOP counts against their papers and official code."""
from __future__ import annotations

import argparse
import json
import sys

from nas.seed_table import format_table, seed_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__ + " FLOPs are G multiply-accumulates at 224x224, "
                                     "1000 classes (convs, linears and attention matmuls).")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args(argv)
    rows = seed_table()
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

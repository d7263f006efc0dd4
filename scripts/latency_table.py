"""Measure a latency table of the search space on this machine: python scripts/latency_table.py --out FILE.json"""
from __future__ import annotations

import sys

from nas.cli import latency_table_main

if __name__ == "__main__":
    sys.exit(latency_table_main())

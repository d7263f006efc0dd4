"""Search hybrid vision backbones under a compute budget (see --help)."""
import sys

from nas.cli import search_main

if __name__ == "__main__":
    sys.exit(search_main())

"""`python -m fastdiff.bench`: the same as `fastdiff bench`."""

from __future__ import annotations

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))

"""`python -m fastdiff.bench`: the same as `fastdiff bench`."""

import sys

from fastdiff.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))

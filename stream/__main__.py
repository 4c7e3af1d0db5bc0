"""`python -m stream [options]` is `recsys stream [options]`."""

import sys

from recsys.cli import main

sys.exit(main(["stream", *sys.argv[1:]]))

"""``python -m moesim``: the same command line as ``moesim``."""

import sys

from moesim.cli import cli

sys.exit(cli())

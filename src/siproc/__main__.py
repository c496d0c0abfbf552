"""`python -m siproc` runs the softphone."""

import sys

from siproc.cli import main

sys.exit(main(sys.argv[1:]))

"""``python -m siproc.sim``: the same as ``siproc-sim``."""

import sys

from siproc.sim import main

sys.exit(main())

#!/usr/bin/env bash
# The long fuzz run: every fuzz test of tests/fuzz, again and again with fresh seeds, for
# MINUTES minutes (default 10), with the `long` hypothesis profile (SIPROC_FUZZ=long). Prints
# the inputs tried per target, the total, inputs/s and the findings (each with its falsifying
# example and a @reproduce_failure blob on stderr). Exits 1 if there was a finding.
#   scripts/fuzz.sh [MINUTES]
# The short run (the `ci` profile, about 30 s) is part of every `python3 -m pytest`.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-10}"
export SIPROC_FUZZ=long
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m tests.fuzz.run --minutes "$minutes"

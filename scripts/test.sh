#!/usr/bin/env bash
# The one test command (README and .ci/run call it): install what is missing, then lint, check
# formatting and types, and run the whole test suite, real-peer interop tests included.
# Arguments go to pytest, e.g.  scripts/test.sh -x -k register   or   scripts/test.sh tests/unit
# Stops at the first failing step and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "install dependencies"
bash scripts/install-deps.sh

step "ruff check"
python3 -m ruff check src tests bench

step "ruff format --check"
python3 -m ruff format --check src tests bench

step "mypy"
python3 -m mypy

step "import layers (scripts/check_imports.py)"
python3 scripts/check_imports.py

step "pytest"
# Exit status 5 ("no tests collected") is non-zero, so it fails the run like any other failure.
python3 -m pytest -q "$@"

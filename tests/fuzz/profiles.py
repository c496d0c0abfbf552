"""Hypothesis settings of the fuzz harness, and the input counter the long runner reports.

Two profiles, chosen by the ``SIPROC_FUZZ`` environment variable when the fuzz modules are
imported:

- ``ci`` (the default): a fixed number of examples per test, sized so that the whole harness
  takes about 30 s on a 2-core machine; part of every ``python3 -m pytest`` run.
- ``long`` (``SIPROC_FUZZ=long``): many more examples per call; ``scripts/fuzz.sh`` calls the
  tests again and again with fresh seeds until its time is up (``tests/fuzz/run.py``).

A test whose single example costs more than the others passes ``cost`` to
:func:`fuzz_settings`, which divides its number of examples, so every test gets about the same
share of time.
"""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, settings

CI_EXAMPLES = 1_500
LONG_EXAMPLES = 1_000

_COMMON = {
    "deadline": None,  # a shared 2-core machine: timing says nothing about a parser
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,  # a finding can be replayed with @reproduce_failure
}
settings.register_profile("ci", max_examples=CI_EXAMPLES, **_COMMON)
settings.register_profile("long", max_examples=LONG_EXAMPLES, **_COMMON)

PROFILE = os.environ.get("SIPROC_FUZZ", "ci")
if PROFILE not in ("ci", "long"):
    raise RuntimeError(f"SIPROC_FUZZ must be ci or long, not {PROFILE!r}")

#: Inputs tried per fuzz target, for the long runner's figures.
INPUTS: Counter[str] = Counter()


def fuzz_settings(cost: float = 1.0) -> settings:
    """The active profile's settings, with ``max_examples`` divided by ``cost``."""
    parent = settings.get_profile(PROFILE)
    return settings(parent, max_examples=max(10, int(parent.max_examples / cost)))


def count(target: str) -> None:
    """Count one input tried on ``target``."""
    INPUTS[target] += 1

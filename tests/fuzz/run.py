"""The long fuzz run: ``python3 -m tests.fuzz.run --minutes N`` (what scripts/fuzz.sh calls).

Calls every fuzz test of this package again and again, each call a fresh hypothesis run of the
``long`` profile with a new random seed, until the time is up; then prints the inputs tried,
inputs per second and the findings (each with the falsifying example hypothesis printed above
it). Exit status 1 if there was a finding.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from collections.abc import Callable

MODULES = (
    "test_message",
    "test_endpoint",
    "test_model",
    "test_offer_answer",
    "test_rtp",
    "test_rtcp",
    "test_protocol",
    "test_phone",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args(argv)
    os.environ.setdefault("SIPROC_FUZZ", "long")
    from tests.fuzz import profiles

    tests: list[tuple[str, Callable[[], None]]] = []
    for name in MODULES:
        module = importlib.import_module(f"tests.fuzz.{name}")
        tests += [(f"{name}.{n}", getattr(module, n)) for n in dir(module) if n.startswith("test_")]
    start = time.monotonic()
    end = start + args.minutes * 60
    findings: list[str] = []
    rounds = 0
    while time.monotonic() < end:
        rounds += 1
        for name, test in tests:
            if time.monotonic() >= end:
                break
            try:
                test()
            except Exception as exc:  # a finding: report it and go on fuzzing
                traceback.print_exc()
                findings.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
        total = sum(profiles.INPUTS.values())
        elapsed = time.monotonic() - start
        print(
            f"round {rounds}: {total} inputs in {elapsed:.0f} s, {len(findings)} findings",
            file=sys.stderr,
            flush=True,
        )
    elapsed = time.monotonic() - start
    total = sum(profiles.INPUTS.values())
    print(f"profile: {profiles.PROFILE} ({profiles.LONG_EXAMPLES} examples per test call)")
    print(f"time: {elapsed:.0f} s, rounds: {rounds}")
    for target, inputs in sorted(profiles.INPUTS.items()):
        print(f"  {target}: {inputs} inputs")
    print(f"inputs: {total}")
    print(f"inputs/s: {total / elapsed:.0f}")
    print(f"findings: {len(findings)}")
    for finding in findings:
        print(f"  {finding}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())

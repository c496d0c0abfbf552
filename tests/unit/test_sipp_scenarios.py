"""The SIPp scenarios of the tests (tests/*/sipp/*.xml): a receive timeout bounds a call's wait
only if SIPp cannot sit, without one, at an optional receive just before it.

SIPp arms a ``<recv timeout=...>`` only while the call waits at that very message (src/call.cpp,
``call::run``); an optional ``<recv>`` before it that has matched moves the call on to the next
optional one, where it may wait for ever. In tests/integration/test_scale_out.py that is what hung
SIPp: a call whose INVITE the killed instance had taken got Kamailio's 100 and then waited at the
optional 180 with no timeout, although its 200 had one (5 s).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
SCENARIOS = sorted(TESTS.glob("*/sipp/*.xml"))


def unbounded_waits(scenario: ET.Element) -> list[str]:
    """The optional receives that lead to a receive with a timeout but have none themselves."""
    unbounded: list[str] = []
    waiting: list[ET.Element] = []  # the optional receives since the last other step
    for step in scenario:
        if step.tag != "recv":
            waiting = []
            continue
        if step.get("timeout"):
            unbounded += [
                f"<recv {' '.join(f'{k}={v!r}' for k, v in optional.attrib.items())}>"
                for optional in waiting
                if not optional.get("timeout")
            ]
            waiting = []
        elif step.get("optional") in ("true", "global"):
            waiting.append(step)
        else:
            waiting = []
    return unbounded


def test_there_are_scenarios() -> None:
    assert any(path.name == "uac_scale_out.xml" for path in SCENARIOS)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda path: path.name)
def test_a_timed_receive_is_not_reached_through_optional_ones_without_a_timeout(
    path: Path,
) -> None:
    assert unbounded_waits(ET.parse(path).getroot()) == []


def test_the_check_sees_the_hole_of_the_old_scale_out_scenario() -> None:
    old = ET.fromstring(
        "<scenario><send/>"
        '<recv response="100" optional="true"/><recv response="180" optional="true"/>'
        '<recv response="200" timeout="5000"/><send/></scenario>'
    )
    assert unbounded_waits(old) == [
        "<recv response='100' optional='true'>",
        "<recv response='180' optional='true'>",
    ]

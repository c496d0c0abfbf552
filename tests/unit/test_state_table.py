"""sip/state_table.py: the table walk the call's signalling machines share."""

from __future__ import annotations

import logging
from enum import Enum

import pytest

from siproc.sip.state_table import Table, TableMachine


class Light(Enum):
    OFF = "off"
    ON = "on"


class Press(Enum):
    SWITCH = "switch"
    TAP = "tap"


TABLE: Table[Light, Press] = {
    (Light.OFF, Press.SWITCH): Light.ON,
    (Light.ON, Press.SWITCH): Light.OFF,
    (Light.ON, Press.TAP): Light.ON,
}


class Lamp(TableMachine[Light, Press]):
    def press(self, trigger: Press) -> bool:
        return self._step(trigger)


def test_a_row_changes_the_state_and_is_recorded() -> None:
    lamp = Lamp(TABLE, Light.OFF)
    assert lamp.press(Press.SWITCH) is True
    assert lamp.state is Light.ON
    assert lamp.press(Press.TAP) is True  # a row that keeps the state is taken too
    assert lamp.state is Light.ON
    assert lamp.press(Press.SWITCH) is True
    assert lamp.taken == [
        (Light.OFF, Press.SWITCH),
        (Light.ON, Press.TAP),
        (Light.ON, Press.SWITCH),
    ]


def test_no_row_is_no_change_and_not_recorded() -> None:
    lamp = Lamp(TABLE, Light.OFF)
    assert lamp.can(Press.TAP) is False
    assert lamp.press(Press.TAP) is False
    assert lamp.state is Light.OFF
    assert lamp.taken == []
    assert lamp.can(Press.SWITCH) is True


def test_state_changes_are_logged_at_debug_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test_state_table")
    lamp = Lamp(TABLE, Light.OFF, log=log, log_as="lamp 1")
    with caplog.at_level(logging.DEBUG, logger="test_state_table"):
        lamp.press(Press.SWITCH)
        lamp.press(Press.TAP)  # no change: no line
        lamp.press(Press.SWITCH)
    assert [r.getMessage() for r in caplog.records] == [
        "lamp 1: off -> on (switch)",
        "lamp 1: on -> off (switch)",
    ]
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_without_a_logger_nothing_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    lamp = Lamp(TABLE, Light.OFF)
    with caplog.at_level(logging.DEBUG):
        lamp.press(Press.SWITCH)
    assert caplog.records == []

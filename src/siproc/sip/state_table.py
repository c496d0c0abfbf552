"""The table walk of the call's signalling machines (DESIGN rule 3), sans-I/O.

`InviteSession`, `SessionUpdate` and the two REFER roles each keep every state change they can
make in one table, ``(state, trigger) -> state``, in the style of h11's ``_state.py``.
`TableMachine` is the one walk over such a table that they share: `can` asks whether the
current state has a row for a trigger, `_step` takes that row. A trigger without a row is not
applicable in the current state; what that means (ignore a stray input, refuse a handler
command) is the machine's own decision, so `_step` answers False instead of raising.

Every row taken is appended to ``taken``: each machine's unit tests run all their scenarios and
assert that the rows taken are exactly the rows of its table, so that a row nothing exercises
(or a test that walks outside the table) shows up at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import Enum
from typing import Generic, TypeVar

__all__ = ["StateT", "Table", "TableMachine", "TriggerT"]

StateT = TypeVar("StateT", bound=Enum)
TriggerT = TypeVar("TriggerT", bound=Enum)

#: ``(state, trigger) -> state``: every legal move of one machine.
Table = Mapping[tuple[StateT, TriggerT], StateT]


class TableMachine(Generic[StateT, TriggerT]):
    """A state that changes only along the rows of ``table``; see the module docstring.

    ``log`` and ``log_as``: when given, a state change is logged at debug level as
    ``<log_as>: <old> -> <new> (<trigger>)`` (a row that keeps the state is not logged).
    """

    def __init__(
        self,
        table: Table[StateT, TriggerT],
        initial: StateT,
        *,
        log: logging.Logger | None = None,
        log_as: str = "",
    ) -> None:
        self.state = initial
        self.taken: list[tuple[StateT, TriggerT]] = []  # every row this machine used
        self._table = table
        self._log = log
        self._log_as = log_as

    def can(self, trigger: TriggerT) -> bool:
        """The current state has a row for ``trigger``."""
        return (self.state, trigger) in self._table

    def _step(self, trigger: TriggerT) -> bool:
        """Take the table's row for ``trigger``; False (and no change) when there is none."""
        old = self.state
        new = self._table.get((old, trigger))
        if new is None:
            return False
        self.taken.append((old, trigger))
        if new is not old:
            if self._log is not None:
                self._log.debug(
                    "%s: %s -> %s (%s)", self._log_as, old.value, new.value, trigger.value
                )
            self.state = new
        return True

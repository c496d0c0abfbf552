"""Errors of the SIP core, each saying whose fault it is (DESIGN.md section 1, rule 4).

- `ParseError`: bytes or text from outside did not follow the grammar. It carries a precise
  message; where the header section could still be read, `headers` holds it so that a request
  can be answered with 400 (RFC 3261 section 8.2.2 and RFC 4475 section 3.1.2).
- `RemoteProtocolError`: the peer sent something well formed that we refuse; carries the status
  to answer with and any headers that answer needs (420 wants Unsupported, 415 wants Accept...).
- `LocalProtocolError`: our own code misused an API. A bug, never the peer's fault.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from siproc.sip.message import Headers


class ParseError(ValueError):
    """Text that does not follow the SIP grammar.

    `status` is what a request it carries the headers of is answered with: 400, or 513 for a
    message over the size limit (RFC 3261 section 21.5.14).
    """

    def __init__(self, message: str, *, headers: Headers | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.headers = headers
        self.status = status


class RemoteProtocolError(Exception):
    """A peer's request we refuse, with the SIP status to answer it with."""

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        if not 300 <= status <= 699:
            raise LocalProtocolError(
                f"RemoteProtocolError needs a final error status, not {status}"
            )
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers


class LocalProtocolError(Exception):
    """Our own code used the SIP core wrongly: a bug in siproc."""

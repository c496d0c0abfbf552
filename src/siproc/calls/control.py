"""The main stdin control protocol: `CALL <uri> [Header: value ...]`, `DRAIN` and `QUIT` (pure).

A CALL line is the target, a SIP URI (`sip:bob@host;transport=tcp`) or a name-addr
(`"Bob" <sip:bob@host>`), optionally followed by headers for the INVITE. A header starts at a
token followed by a colon and a space, so

    CALL sip:bob@pbx X-Alert: disk full on /var Subject: nightly check

adds `X-Alert: disk full on /var` and `Subject: nightly check`. Headers that siproc writes
itself (Via, From, To, Call-ID, CSeq, Contact, routing, authentication, content framing) are
refused: they would break the dialog.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from siproc.sip.message import canonical_name

# RFC 3261 section 25.1 token, then ": " (the space keeps "sip:" inside a URI from matching).
_HEADER_START = re.compile(r"(?:^|\s+)([A-Za-z0-9\-.!%*_+`'~]+):\s+")
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Route",
        "Record-Route",
        "Authorization",
        "Proxy-Authorization",
        "Content-Length",
        "Content-Type",
        "Content-Encoding",
        "Require",
        "Proxy-Require",
        "Allow",
    )
)


class ControlError(ValueError):
    """A main stdin line siproc cannot act on; the message says what to type instead."""


@dataclass(frozen=True, slots=True)
class Quit:
    """`QUIT`: hang up everything, un-REGISTER, exit 0."""


@dataclass(frozen=True, slots=True)
class StartDrain:
    """`DRAIN`: take no new calls, exit 0 when the last one has ended (calls/drain.py)."""


@dataclass(frozen=True, slots=True)
class Dial:
    """`CALL <target> [Header: value ...]`."""

    target: str
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.target:
            raise ControlError("CALL needs a SIP URI, e.g. 'CALL sip:bob@example.com'")
        for name, value in self.headers:
            if canonical_name(name).lower() in RESERVED_HEADERS:
                raise ControlError(f"CALL: siproc writes the {canonical_name(name)} header itself")
            if not value or any(c in value for c in "\r\n\0"):
                raise ControlError(f"CALL: header {name} needs a value on the same line")


Control = Quit | StartDrain | Dial


def parse_control_line(line: str) -> Control | None:
    """Parse one line of main stdin; None for a blank line; ControlError otherwise."""
    line = line.strip()
    if not line:
        return None
    verb, _, rest = line.partition(" ")
    verb, rest = verb.upper(), rest.strip()
    if verb == "QUIT":
        if rest:
            raise ControlError("QUIT takes no argument")
        return Quit()
    if verb == "DRAIN":
        if rest:
            raise ControlError("DRAIN takes no argument")
        return StartDrain()
    if verb != "CALL":
        raise ControlError(f"expected 'CALL <sip-uri>', 'DRAIN' or 'QUIT', not {line[:60]!r}")
    if ">" in rest and "<" in rest:  # a name-addr ends at its '>'
        end = rest.index(">") + 1
        target, header_text = rest[:end], rest[end:]
    else:
        target, _, header_text = rest.partition(" ")
    return Dial(target.strip(), _parse_headers(header_text.strip()))


def _parse_headers(text: str) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    starts = list(_HEADER_START.finditer(text))
    if not starts or starts[0].start() != 0:
        raise ControlError(f"CALL: expected 'Header: value' after the URI, not {text[:40]!r}")
    headers = []
    for match, following in zip(starts, [*starts[1:], None], strict=True):
        end = following.start() if following else len(text)
        headers.append((match.group(1), text[match.end() : end].strip()))
    return tuple(headers)

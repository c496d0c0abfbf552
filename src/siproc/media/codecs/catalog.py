"""The codec catalogue and ``SIPROC_CODEC_PRIORITIES``.

The original manual page specifies ``SIPROC_CODEC_PRIORITIES`` as
``<name>:<prio>[,<name>:<prio>...]``, priority 0 disabling a codec, and ``siproc-parameters``
listing the codecs. Names are the pjsip-style full names ``<encoding>/<sample rate>/<channels>``
(``PCMU/8000/1``, ``G722/16000/1``, ``opus/48000/2`` ...). An entry's name matches every
known codec whose full name starts with it, ignoring case, so ``pcmu`` and ``PCMU/8000`` both
mean ``PCMU/8000/1`` and ``G7`` means every G.7xx codec. Priorities are 0-255 (as in pjsip:
higher is preferred, 0 disables).

The SDP side of each codec is a :class:`~siproc.sdp.offer_answer.CodecSpec`: G.722 is
``G722/8000`` in SDP although it samples at 16 kHz (RFC 3551 section 4.5.2); Opus is always
``opus/48000/2`` (RFC 7587 section 7); telephone-event is RFC 4733 with events 0-16.

G.711 (PCMU, PCMA) and telephone-event are built in. G.722 needs the ``g722`` package and Opus
the system libopus: each is usable only when its library loads AND a tone survives an
encode/decode round trip (a self-test at the first :func:`codec_availability`); otherwise it is
listed with the reason (``siproc-parameters`` shows it) and never offered nor accepted.

Pure: no I/O at import; :func:`codec_availability` probes lazily and is cached.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from siproc.media.codecs import g722, opus
from siproc.sdp.offer_answer import CodecSpec

__all__ = [
    "DEFAULT_PRIORITIES",
    "KNOWN_CODECS",
    "MAX_PRIORITY",
    "CodecEntry",
    "CodecPriorityError",
    "apply_priorities",
    "codec_availability",
    "default_entries",
    "enabled_codecs",
    "telephone_event_spec",
]

MAX_PRIORITY = 255
TELEPHONE_EVENT = "telephone-event/8000/1"

#: Full name -> the format as offered in SDP (static payload types from RFC 3551 table 4,
#: dynamic ones from the 96-127 range, RFC 3551 section 3).
KNOWN_CODECS: dict[str, CodecSpec] = {
    "PCMU/8000/1": CodecSpec("PCMU", 8000, 1, 0),
    "PCMA/8000/1": CodecSpec("PCMA", 8000, 1, 8),
    "G722/16000/1": CodecSpec("G722", 8000, 1, 9),
    "opus/48000/2": CodecSpec("opus", 48000, 2, 96, "useinbandfec=1"),
    TELEPHONE_EVENT: CodecSpec("telephone-event", 8000, 1, 101, "0-16"),
}

#: Wideband first (as pjsip: Opus, then G.722), then G.711 mu-law, then A-law. A codec whose
#: library is missing is not usable, so the default offer falls back to G.711 by itself.
DEFAULT_PRIORITIES: dict[str, int] = {
    "opus/48000/2": 140,
    "G722/16000/1": 135,
    "PCMU/8000/1": 130,
    "PCMA/8000/1": 120,
    TELEPHONE_EVENT: 128,
}


class CodecPriorityError(ValueError):
    """``SIPROC_CODEC_PRIORITIES`` is malformed; the message names the offending entry."""


@dataclass(frozen=True, slots=True)
class CodecEntry:
    """One catalogue line: full name, priority (0 = disabled), whether it can be used and why."""

    full_name: str
    priority: int
    usable: bool
    reason: str

    @property
    def spec(self) -> CodecSpec:
        """The SDP description of this codec."""
        return KNOWN_CODECS[self.full_name]

    @property
    def enabled(self) -> bool:
        """Usable and not disabled by priority 0: the codec will be offered/accepted."""
        return self.usable and self.priority > 0

    def describe(self) -> str:
        """One line for ``siproc-parameters``: name, priority, state and reason."""
        state = "enabled" if self.enabled else ("disabled" if self.usable else "unavailable")
        return f"{self.full_name}:{self.priority} {state} ({self.reason})"


@functools.cache
def codec_availability() -> dict[str, tuple[bool, str]]:
    """Full name -> (usable, reason), probing the optional codecs once per process.

    G.722 (the ``g722`` package) and Opus (libopus through ctypes) are usable when their
    library loads and passes a round-trip self-test; the reason says what is there or why not.
    """
    return {
        "PCMU/8000/1": (True, "G.711 mu-law, built in"),
        "PCMA/8000/1": (True, "G.711 A-law, built in"),
        "G722/16000/1": g722.probe(),
        "opus/48000/2": opus.probe(),
        TELEPHONE_EVENT: (True, "RFC 4733 DTMF events, built in"),
    }


def default_entries(
    availability: Mapping[str, tuple[bool, str]] | None = None,
) -> list[CodecEntry]:
    """Every known codec with its default priority, in catalogue order."""
    probed = codec_availability() if availability is None else availability
    entries = []
    for name in KNOWN_CODECS:
        usable, reason = probed.get(name, (False, "not probed"))
        entries.append(CodecEntry(name, DEFAULT_PRIORITIES[name], usable, reason))
    return entries


def apply_priorities(
    spec: str, *, availability: Mapping[str, tuple[bool, str]] | None = None
) -> list[CodecEntry]:
    """Apply ``SIPROC_CODEC_PRIORITIES`` to the defaults; every known codec, catalogue order.

    ``spec`` is ``<name>:<prio>[,<name>:<prio>...]`` (blanks around items ignored, an empty
    spec keeps the defaults, later entries override earlier ones). Raises
    :class:`CodecPriorityError` for an entry without ``:``, a priority that is not an integer
    0-255, or a name that is not a prefix of any known codec.
    """
    entries = default_entries(availability)
    priorities = {entry.full_name: entry.priority for entry in entries}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, colon, value = item.rpartition(":")
        name, value = name.strip(), value.strip()
        if not colon or not name:
            raise CodecPriorityError(
                f"SIPROC_CODEC_PRIORITIES entry {item!r} is not <name>:<priority>"
            )
        if not (value.isascii() and value.isdigit()) or not 0 <= int(value) <= MAX_PRIORITY:
            raise CodecPriorityError(
                f"SIPROC_CODEC_PRIORITIES entry {item!r}: priority {value!r} is not an "
                f"integer 0-{MAX_PRIORITY}"
            )
        matches = [full for full in KNOWN_CODECS if full.lower().startswith(name.lower())]
        if not matches:
            raise CodecPriorityError(
                f"SIPROC_CODEC_PRIORITIES entry {item!r}: {name!r} matches no codec; "
                f"known codecs: {', '.join(KNOWN_CODECS)}"
            )
        for full in matches:
            priorities[full] = int(value)
    return [replace(entry, priority=priorities[entry.full_name]) for entry in entries]


def enabled_codecs(entries: Iterable[CodecEntry]) -> list[CodecSpec]:
    """The audio codecs to offer/accept: usable, priority > 0, highest priority first (ties
    keep catalogue order); telephone-event is excluded (see :func:`telephone_event_spec`)."""
    chosen = [e for e in entries if e.enabled and e.full_name != TELEPHONE_EVENT]
    return [e.spec for e in sorted(chosen, key=lambda e: -e.priority)]


def telephone_event_spec(entries: Iterable[CodecEntry]) -> CodecSpec | None:
    """The telephone-event format (RFC 4733) if enabled, else None."""
    for entry in entries:
        if entry.full_name == TELEPHONE_EVENT and entry.enabled:
            return entry.spec
    return None

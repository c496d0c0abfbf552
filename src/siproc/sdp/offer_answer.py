"""RFC 3264 offer/answer for one audio stream.

Theory of operation. Each side's SDP says what that side wants to *receive*: its address and
port, and the payload type numbers it expects (RFC 3264 section 5.1). So:

- We send to the remote's ``c=``/``m=`` address, with the remote's payload type numbers:
  :class:`NegotiatedMedia` carries the codec as the remote numbers it.
- As answerer we reuse the offerer's payload type numbers (RFC 3264 section 6.1), pick one
  codec in *our* priority order among those offered, add telephone-event (RFC 4733 section
  7.1.1) if offered, answer every m-line in order and reject the ones we do not take with port
  0 (RFC 3264 section 6), and derive our direction from the offered one (section 6.1).
- As offerer we accept the first codec the answerer lists that we offered (section 6.1: the
  answerer lists formats in its preference order).
- Telephone-event (RFC 4733) may be offered at several clock rates, each its own payload type
  (section 7.1.1 of RFC 4733; WebRTC offers 48000 and 8000). Every telephone-event format keeps
  the clock rate its own ``a=rtpmap`` gives it, in our SDP too. We *send* events with one of
  them: the one at the audio codec's RTP clock rate (RFC 4733 section 2.1), see
  :func:`choose_telephone_event`. We *receive* them on every telephone-event payload type either
  SDP defines (:attr:`NegotiatedMedia.receive_telephone_events`): an answer repeats all the
  offered ones, and phones are known to send on the 8000 Hz one whatever was chosen.
- Hold (RFC 3264 section 8.4): a side that does not want to receive marks the stream
  ``sendonly`` (or ``inactive``); RFC 2543 peers set ``c=0.0.0.0`` instead (RFC 3264 section
  8.4 asks to understand it).

Only ``RTP/AVP`` and ``RTP/SAVP`` audio is negotiated; other streams are rejected. SRTP keying
(SDES, RFC 4568) follows an :class:`~siproc.sdp.sdes.SrtpMode` and lives in
:mod:`siproc.sdp.sdes`; its outcome is :attr:`NegotiatedMedia.srtp`.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from siproc.sdp.model import (
    DIRECTIONS,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    connection_address,
    direction,
    fmtp,
    rtpmap,
)
from siproc.sdp.sdes import (
    AnswerKeying,
    KeyingError,
    SrtpMode,
    SrtpParams,
    accept_keying,
    answer_keying,
    offer_keying,
)

__all__ = [
    "DEFAULT_PTIME",
    "STATIC_AUDIO_PAYLOAD_TYPES",
    "SUPPORTED_PROTOS",
    "TELEPHONE_EVENT_BASE_RATE",
    "CodecSpec",
    "NegotiatedMedia",
    "OfferAnswerError",
    "accept_answer",
    "answer_offer",
    "build_offer",
    "choose_telephone_event",
    "offer_telephone_events",
]

#: RFC 3551 section 6, table 4: static audio payload types (encoding, clock rate, channels).
#: G722 is listed at 8000 Hz although it samples at 16 kHz (RFC 3551 section 4.5.2).
STATIC_AUDIO_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
}

#: Transport protocols we answer (RFC 3551 section 1; RTP/SAVP: RFC 3711 section 12, as
#: :mod:`siproc.sdp.sdes` allows).
SUPPORTED_PROTOS = ("RTP/AVP", "RTP/SAVP")
#: RFC 3551 section 4.5: 20 ms packets unless the receiver asks otherwise (a=ptime).
DEFAULT_PTIME = 20
_TELEPHONE_EVENT = "telephone-event"
#: RFC 4733 section 7.1.1 (and RFC 2833 before it): the clock rate every implementation of
#: telephone-event supports; the fallback when none matches the audio codec's.
TELEPHONE_EVENT_BASE_RATE = 8000
#: RFC 3551 section 3: dynamic payload types (extra telephone-event rates of our offers).
_DYNAMIC_PTS = range(96, 128)
_UNSPECIFIED = frozenset({"0.0.0.0", "::"})


class OfferAnswerError(ValueError):
    """No acceptable media (``status`` is the SIP status to answer an offer with: 488)."""

    def __init__(self, message: str, *, status: int = 488) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """An RTP payload format: ``a=rtpmap:<payload_type> <name>/<clock_rate>[/<channels>]``.

    ``clock_rate`` is the RTP clock as written in SDP (G722: 8000, RFC 3551 section 4.5.2;
    opus: 48000/2, RFC 7587 section 7). ``fmtp`` is the ``a=fmtp`` parameter string.
    """

    name: str
    clock_rate: int
    channels: int
    payload_type: int
    fmtp: str | None = None

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() or c == "/" for c in self.name):
            raise ValueError(f"bad codec name {self.name!r}")
        if self.clock_rate <= 0 or self.channels <= 0:
            raise ValueError(f"bad clock rate or channels for {self.name}")
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} out of range 0-127")
        if self.fmtp is not None and any(c in self.fmtp for c in "\r\n"):
            raise ValueError("fmtp must not contain CR or LF")

    @property
    def rtpmap(self) -> str:
        """The ``a=rtpmap`` value (channels written only when not 1, RFC 8866 section 6.6)."""
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.payload_type} {self.name}/{self.clock_rate}{suffix}"

    def matches(self, encoding: str, clock_rate: int, channels: int) -> bool:
        """Same encoding (case-insensitive, RFC 4855 section 3), clock rate and channels."""
        return (
            encoding.lower() == self.name.lower()
            and clock_rate == self.clock_rate
            and channels == self.channels
        )


@dataclass(frozen=True, slots=True)
class NegotiatedMedia:
    """The outcome of one offer/answer exchange for the audio stream.

    ``remote_address`` port 0 means the stream was rejected. ``codec`` and
    ``telephone_event_pt`` use the remote's payload type numbers (what we send);
    ``local_payload_type`` and ``local_telephone_event_pt`` are the numbers in our own SDP
    (what the remote sends to us). ``direction`` is OUR direction; ``remote_hold`` is True when
    the remote does not want to receive (sendonly/inactive, or c=0.0.0.0). ``srtp`` is the
    SRTP suite and keys (None: plain RTP).

    ``telephone_event_rate`` is the clock rate of ``telephone_event_pt`` (RFC 4733 section
    2.3.5: event durations count in its units). ``receive_telephone_events`` maps every
    telephone-event payload type the remote may send us (those of our SDP and of its SDP) to
    its clock rate; empty when the remote does not do telephone-event.
    """

    remote_address: tuple[str, int]
    codec: CodecSpec
    telephone_event_pt: int | None
    direction: str
    remote_hold: bool
    rtcp_mux: bool
    ptime: int = DEFAULT_PTIME
    local_payload_type: int | None = None
    local_telephone_event_pt: int | None = None
    remote_rtcp: tuple[str, int] | None = None  # the remote's a=rtcp (RFC 3605), if any
    telephone_event_rate: int | None = None
    receive_telephone_events: Mapping[int, int] = field(default_factory=dict)
    srtp: SrtpParams | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"bad direction {self.direction!r}")
        if self.telephone_event_rate is not None and self.telephone_event_rate <= 0:
            raise ValueError(f"bad telephone-event clock rate {self.telephone_event_rate}")
        for pt, clock in self.receive_telephone_events.items():
            if not 0 <= pt <= 127 or clock <= 0:
                raise ValueError(f"bad telephone-event {pt} at {clock} Hz")
        if not 0 <= self.remote_address[1] <= 65535:
            raise ValueError(f"bad port {self.remote_address[1]}")
        if self.ptime <= 0:
            raise ValueError(f"bad ptime {self.ptime}")

    @property
    def rejected(self) -> bool:
        return self.remote_address[1] == 0


# --------------------------------------------------------------------------------------------
# Offers


def build_offer(
    *,
    address: str,
    port: int,
    codecs: Sequence[CodecSpec],
    session_id: int,
    session_version: int,
    direction: str = "sendrecv",
    telephone_event: CodecSpec | None = None,
    ptime: int = DEFAULT_PTIME,
    rtcp_mux: bool = True,
    srtp: SrtpMode = SrtpMode.OFF,
) -> SessionDescription:
    """An offer with one ``RTP/AVP`` audio stream listing ``codecs`` in priority order.

    ``srtp`` other than off adds ``a=crypto`` lines with fresh keys (``RTP/SAVP`` when
    mandatory, :func:`siproc.sdp.sdes.offer_keying`).

    Every format gets an ``a=rtpmap`` (static ones too, RFC 8866 section 6.6 recommends it),
    then ``a=fmtp`` where set, ``a=ptime``, ``a=rtcp-mux`` (RFC 5761 section 5.1.1) and the
    direction. An IPv6 ``address`` gives ``IN IP6`` lines. ``telephone_event`` is offered at
    every codec's clock rate (:func:`offer_telephone_events`).
    """
    if not codecs:
        raise ValueError("an offer needs at least one codec")
    if not 0 < port <= 65535:
        raise ValueError(f"bad RTP port {port}")
    if direction not in DIRECTIONS:
        raise ValueError(f"bad direction {direction!r}")
    if ptime <= 0:
        raise ValueError(f"bad ptime {ptime}")
    formats = [*codecs, *offer_telephone_events(codecs, telephone_event)]
    numbers = [c.payload_type for c in formats]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"duplicate payload types in offer: {numbers}")
    proto, crypto = offer_keying(srtp)
    media = MediaDescription("audio", port, proto, [str(n) for n in numbers])
    _describe_formats(media, formats)
    media.attributes += [("crypto", attribute.value) for attribute in crypto]
    media.attributes.append(("ptime", str(ptime)))
    if rtcp_mux:
        media.attributes.append(("rtcp-mux", None))
    media.attributes.append((direction, None))
    return _session(address, session_id, session_version, [media])


def offer_telephone_events(
    codecs: Sequence[CodecSpec], telephone_event: CodecSpec | None
) -> list[CodecSpec]:
    """``telephone_event`` as offered: as given, then one more at each other RTP clock rate of
    ``codecs`` (opus: 48000), so that an answerer can send events at the clock of the codec it
    picks (RFC 4733 section 2.1). The extra ones take the next free dynamic payload types after
    ``telephone_event``'s (RFC 3551 section 3); empty without ``telephone_event``.
    """
    if telephone_event is None:
        return []
    events = [telephone_event]
    used = {c.payload_type for c in codecs} | {telephone_event.payload_type}
    free = [pt for pt in _DYNAMIC_PTS if pt not in used]
    free.sort(key=lambda pt: (pt < telephone_event.payload_type, pt))
    for codec in codecs:
        if codec.name.lower() == _TELEPHONE_EVENT:
            continue
        if all(e.clock_rate != codec.clock_rate for e in events) and free:
            events.append(
                replace(telephone_event, clock_rate=codec.clock_rate, payload_type=free.pop(0))
            )
    return events


def _session(
    address: str, session_id: int, session_version: int, media: list[MediaDescription]
) -> SessionDescription:
    conn = _connection(address)
    origin = Origin("-", session_id, session_version, "IN", conn.addrtype, address)
    return SessionDescription(origin=origin, session_name="-", connection=conn, media=media)


def _describe_formats(media: MediaDescription, formats: Sequence[CodecSpec]) -> None:
    for codec in formats:
        media.attributes.append(("rtpmap", codec.rtpmap))
        if codec.fmtp is not None:
            media.attributes.append(("fmtp", f"{codec.payload_type} {codec.fmtp}"))


# --------------------------------------------------------------------------------------------
# Answers


def answer_offer(
    offer: SessionDescription,
    *,
    address: str,
    port: int,
    codecs: Sequence[CodecSpec],
    session_id: int,
    session_version: int,
    telephone_event: CodecSpec | None = None,
    hold: bool = False,
    ptime: int = DEFAULT_PTIME,
    rtcp_mux: bool = True,
    srtp: SrtpMode = SrtpMode.OFF,
) -> tuple[SessionDescription, NegotiatedMedia]:
    """Answer ``offer`` (RFC 3264 section 6): one audio stream, one codec.

    ``codecs`` is our priority order. The first acceptable audio m-line is taken; every other
    m-line is answered with port 0 in the same position. With ``telephone_event``, every
    telephone-event the offer lists is answered with the offer's number and clock rate, the one
    we send with (:func:`choose_telephone_event`) first. ``hold`` puts the remote on hold (we
    stop receiving: sendonly or inactive, RFC 3264 section 8.4). ``srtp`` decides which
    transports and keys are acceptable (:func:`siproc.sdp.sdes.answer_keying`). Raises
    :class:`OfferAnswerError` (status 488) when no audio stream is acceptable.
    """
    if not 0 < port <= 65535:
        raise ValueError(f"bad RTP port {port}")
    chosen: tuple[int, CodecSpec, CodecSpec] | None = None
    problems: list[str] = []
    keying = AnswerKeying(None, None)
    for index, media in enumerate(offer.media):
        if media.media != "audio" or media.port == 0:
            continue
        if media.proto not in SUPPORTED_PROTOS:
            problems.append(f"m-line {index + 1}: unsupported transport {media.proto}")
            continue
        offered_keying = answer_keying(media, srtp)
        if isinstance(offered_keying, str):
            problems.append(f"m-line {index + 1}: {offered_keying}")
            continue
        keying = offered_keying
        common = _first_common(media, codecs)
        if common is None:
            problems.append(f"m-line {index + 1}: no common codec in {_offered(media)}")
            continue
        chosen = (index, *common)
        break
    if chosen is None:
        detail = "; ".join(problems) if problems else "no audio stream offered"
        raise OfferAnswerError(f"not acceptable here: {detail}", status=488)

    index, local_codec, codec = chosen
    offered = offer.media[index]
    remote_ip = _ip(connection_address(offer, offered), index)
    offer_dir = direction(offer, offered)
    remote_sends = offer_dir in ("sendrecv", "sendonly")
    remote_receives = offer_dir in ("sendrecv", "recvonly") and remote_ip not in _UNSPECIFIED
    our_dir = _direction_from(send=remote_receives, receive=remote_sends and not hold)
    mux = rtcp_mux and offered.has_attribute("rtcp-mux")
    events = _telephone_events(offered, codec.payload_type) if telephone_event is not None else {}
    event = choose_telephone_event(events, codec.clock_rate)
    # The chosen one first, then the others the offer has, each at the offer's own clock rate
    # (RFC 3264 section 6.1): a phone may send its events on any of them.
    answered_events: list[CodecSpec] = []
    if telephone_event is not None and event is not None:
        answered_events = [
            _variant(telephone_event, telephone_event.name, clock, pt, telephone_event.fmtp)
            for pt, clock in sorted(events.items(), key=lambda item: item[0] != event[0])
        ]

    answer_media: list[MediaDescription] = []
    for i, media in enumerate(offer.media):
        if i != index:
            answer_media.append(MediaDescription(media.media, 0, media.proto, media.formats[:]))
            continue
        formats = [local_codec, *answered_events]
        numbers = [str(c.payload_type) for c in formats]
        answered = MediaDescription("audio", port, media.proto, numbers)
        _describe_formats(answered, formats)
        if keying.attribute is not None:
            answered.attributes.append(("crypto", keying.attribute.value))
        answered.attributes.append(("ptime", str(ptime)))
        if mux:
            answered.attributes.append(("rtcp-mux", None))
        answered.attributes.append((our_dir, None))
        answer_media.append(answered)

    negotiated = NegotiatedMedia(
        remote_address=(remote_ip, offered.port),
        codec=codec,
        telephone_event_pt=None if event is None else event[0],
        direction=our_dir,
        remote_hold=not remote_receives,
        rtcp_mux=mux,
        ptime=_ptime(offered),
        remote_rtcp=_rtcp_address(offered, remote_ip),
        local_payload_type=codec.payload_type,
        local_telephone_event_pt=None if event is None else event[0],
        telephone_event_rate=None if event is None else event[1],
        receive_telephone_events=events,
        srtp=keying.params,
    )
    return _session(address, session_id, session_version, answer_media), negotiated


def _first_common(
    media: MediaDescription, codecs: Sequence[CodecSpec]
) -> tuple[CodecSpec, CodecSpec] | None:
    """Our first codec (our order) that ``media`` offers, as (for our SDP, for sending).

    Both use the offer's payload type number and spelling (RFC 3264 section 6.1); the first
    keeps our fmtp (what we want to receive), the second takes the offer's (what the remote
    wants to receive).
    """
    offered = _formats(media)
    params = fmtp(media)
    for ours in codecs:
        if ours.name.lower() == _TELEPHONE_EVENT:
            continue
        for pt, (encoding, clock, channels) in offered:
            if ours.matches(encoding, clock, channels):
                local = _variant(ours, encoding, ours.clock_rate, pt, ours.fmtp)
                return local, _variant(ours, encoding, ours.clock_rate, pt, params.get(pt))
    return None


@functools.lru_cache(maxsize=256)
def _variant(
    spec: CodecSpec, name: str, clock_rate: int, payload_type: int, fmtp: str | None
) -> CodecSpec:
    """``spec`` under another spelling, clock rate, number or fmtp, as ``dataclasses.replace``
    gives it, once per combination: a CodecSpec is immutable, and every call with the same
    peer asks for the same few (replace() costs a field walk and a validation each time)."""
    return CodecSpec(name, clock_rate, spec.channels, payload_type, fmtp)


#: ``c=`` for our own address (there are a few), shared by every answer and offer.
_connection = functools.lru_cache(maxsize=64)(Connection.for_address)


def _formats(media: MediaDescription) -> list[tuple[int, tuple[str, int, int]]]:
    """The m-line's formats in order with their encodings (rtpmap, else the static table)."""
    maps = rtpmap(media)
    result: list[tuple[int, tuple[str, int, int]]] = []
    for fmt in media.formats:
        if not (fmt.isascii() and fmt.isdigit() and len(fmt) <= 3):  # 0-127 (RFC 3551 3)
            continue
        pt = int(fmt)
        encoding = maps.get(pt) or STATIC_AUDIO_PAYLOAD_TYPES.get(pt)
        if encoding is not None:
            result.append((pt, encoding))
    return result


def _offered(media: MediaDescription) -> str:
    names = [f"{e}/{c}" + (f"/{n}" if n != 1 else "") for _, (e, c, n) in _formats(media)]
    return ", ".join(names) if names else "(nothing recognisable)"


def _telephone_events(media: MediaDescription, *audio_pts: int | None) -> dict[int, int]:
    """Payload type -> clock rate of each telephone-event format of ``media``, in its order
    (RFC 4733 section 7.1.1); a number that carries the audio (in either SDP) is left out, and
    so is a clock rate of 0. (The SDP parser refuses payload types beyond 127 in m= lines.)"""
    return {
        pt: clock
        for pt, (encoding, clock, _) in _formats(media)
        if encoding.lower() == _TELEPHONE_EVENT and pt not in audio_pts and clock > 0
    }


def choose_telephone_event(events: Mapping[int, int], codec_clock: int) -> tuple[int, int] | None:
    """The telephone-event to send with, as (payload type, clock rate), from ``events``
    (payload type -> clock rate, in the SDP's order); None when there is none.

    RFC 4733 section 2.1 asks for the audio codec's RTP clock rate (``codec_clock``): the
    events then share the audio's timestamps. When none matches, 8000 Hz (the rate of RFC 2833,
    which every implementation of telephone-event has), and failing that the first listed (the
    peer's preference, RFC 3264 section 6.1); the sender then counts durations in that rate's
    units (:class:`~siproc.media.dtmf.DtmfSender`).
    """
    for wanted in (codec_clock, TELEPHONE_EVENT_BASE_RATE):
        for pt, clock in events.items():
            if clock == wanted:
                return pt, clock
    return next(iter(events.items()), None)


def _ip(address: str | None, index: int) -> str:
    """The c= address of m-line ``index`` as an IP literal: siproc resolves no name a peer
    chose (RFC 8866 section 5.7 allows names; phones send addresses), so a name, or anything
    else that is no IP address, makes the SDP unusable (488)."""
    if address is None:
        raise OfferAnswerError(f"m-line {index + 1} has no c= address", status=400)
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise OfferAnswerError(
            f"m-line {index + 1}: the c= address {address[:60]!r} is not an IP address"
        ) from None


def _rtcp_address(media: MediaDescription, remote_ip: str) -> tuple[str, int] | None:
    """The remote's RTCP address from ``a=rtcp:<port> [IN IP4|IP6 <address>]`` (RFC 3605
    section 2.1), the address defaulting to the media's; None when absent or malformed."""
    value = media.attribute("rtcp")
    if value is None:
        return None
    fields = value.split()
    if not fields or not (fields[0].isascii() and fields[0].isdigit() and len(fields[0]) <= 5):
        return None
    port = int(fields[0])
    if not 0 < port <= 65535:
        return None
    if len(fields) == 4 and fields[1] == "IN" and fields[2] in ("IP4", "IP6"):
        return fields[3], port
    return (remote_ip, port) if len(fields) == 1 else None


def _direction_from(*, send: bool, receive: bool) -> str:
    if send and receive:
        return "sendrecv"
    if send:
        return "sendonly"
    if receive:
        return "recvonly"
    return "inactive"


def _ptime(media: MediaDescription) -> int:
    """The remote's a=ptime (RFC 4566 section 6 / RFC 8866 section 6.4), else 20 ms."""
    value = media.attribute("ptime")
    if value is None:
        return DEFAULT_PTIME
    try:
        ptime = round(float(value))
    except (ValueError, OverflowError):  # "abc", "nan", "inf"
        return DEFAULT_PTIME
    return ptime if 1 <= ptime <= 1000 else DEFAULT_PTIME


# --------------------------------------------------------------------------------------------
# Accepting an answer to our offer


def accept_answer(
    offer: SessionDescription, answer: SessionDescription, codecs: Sequence[CodecSpec]
) -> NegotiatedMedia:
    """Negotiate from the answer to our ``offer`` (RFC 3264 section 7).

    The answer must have as many m-lines as the offer (section 6). Our audio stream is the
    first audio m-line we offered with a port; if the answerer rejected it (port 0) the result
    has port 0 and direction "inactive". Otherwise the codec is the first format the answer
    lists that we offered and that is in ``codecs``; none raises :class:`OfferAnswerError`.
    """
    if len(answer.media) != len(offer.media):
        raise OfferAnswerError(
            f"answer has {len(answer.media)} m-lines, the offer had {len(offer.media)}"
        )
    index = next((i for i, m in enumerate(offer.media) if m.media == "audio" and m.port != 0), None)
    if index is None:
        raise OfferAnswerError("our offer has no active audio stream")
    ours, theirs = offer.media[index], answer.media[index]
    if theirs.media != ours.media:
        raise OfferAnswerError(
            f"m-line {index + 1}: answer has {theirs.media!r} where we offered {ours.media!r}"
        )
    offered = _formats(ours)
    usable = [
        spec
        for spec in codecs
        if spec.name.lower() != _TELEPHONE_EVENT and any(spec.matches(*enc) for _, enc in offered)
    ]
    answer_formats = _formats(theirs)
    codec: CodecSpec | None = None
    local_pt: int | None = None
    for pt, (encoding, clock, channels) in answer_formats:
        spec = next((s for s in usable if s.matches(encoding, clock, channels)), None)
        if spec is not None:
            codec = replace(spec, name=encoding, payload_type=pt, fmtp=fmtp(theirs).get(pt))
            local_pt = next(p for p, e in offered if spec.matches(*e))
            break
    remote_ip = "0.0.0.0" if theirs.port == 0 else _ip(connection_address(answer, theirs), 0)
    if theirs.port == 0:
        fallback = codec or (usable[0] if usable else _first_offered(offered))
        return NegotiatedMedia(
            remote_address=(remote_ip, 0),
            codec=fallback,
            telephone_event_pt=None,
            direction="inactive",
            remote_hold=False,
            rtcp_mux=False,
            local_payload_type=local_pt,
        )
    if codec is None:
        raise OfferAnswerError(
            f"answer lists no codec we offered (answer: {_offered(theirs)}; "
            f"offer: {_offered(ours)})"
        )
    try:
        srtp = accept_keying(ours, theirs)
    except KeyingError as exc:
        raise OfferAnswerError(str(exc)) from None
    answer_dir = direction(answer, theirs)
    offer_dir = direction(offer, ours)
    remote_receives = answer_dir in ("sendrecv", "recvonly") and remote_ip not in _UNSPECIFIED
    remote_sends = answer_dir in ("sendrecv", "sendonly")
    our_send = offer_dir in ("sendrecv", "sendonly") and remote_receives
    our_receive = offer_dir in ("sendrecv", "recvonly") and remote_sends
    # Telephone-events of the answer that we offered (matched by clock rate: an answerer
    # should keep our numbers, RFC 3264 section 6.1, but some do not).
    ours_events = _telephone_events(ours, local_pt, codec.payload_type)
    their_events = {
        pt: clock
        for pt, clock in _telephone_events(theirs, local_pt, codec.payload_type).items()
        if clock in ours_events.values()
    }
    event = choose_telephone_event(their_events, codec.clock_rate)
    local_event_pt: int | None = None
    receive: dict[int, int] = {}
    if event is not None:
        local_event_pt = next(pt for pt, clock in ours_events.items() if clock == event[1])
        receive = {**their_events, **ours_events}
    return NegotiatedMedia(
        remote_address=(remote_ip, theirs.port),
        codec=codec,
        telephone_event_pt=None if event is None else event[0],
        direction=_direction_from(send=our_send, receive=our_receive),
        remote_hold=not remote_receives and offer_dir in ("sendrecv", "sendonly"),
        rtcp_mux=ours.has_attribute("rtcp-mux") and theirs.has_attribute("rtcp-mux"),
        ptime=_ptime(theirs),
        local_payload_type=local_pt,
        local_telephone_event_pt=local_event_pt,
        remote_rtcp=_rtcp_address(theirs, remote_ip),
        telephone_event_rate=None if event is None else event[1],
        receive_telephone_events=receive,
        srtp=srtp,
    )


def _first_offered(offered: list[tuple[int, tuple[str, int, int]]]) -> CodecSpec:
    if not offered:
        raise OfferAnswerError("our offer has no recognisable audio format")
    pt, (encoding, clock, channels) = offered[0]
    return CodecSpec(encoding, clock, channels, pt)

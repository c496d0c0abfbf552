"""SDP model (siproc.sdp.model): SDPs as real phones send them, round trips, errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siproc.sdp.model import (
    Connection,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    connection_address,
    direction,
    fmtp,
    parse_sdp,
    rtpmap,
)


def crlf(text: str) -> bytes:
    return text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n"


BARESIP = crlf("""
v=0
o=- 1725547064 3061297329 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
a=tool:baresip 1.0.0
m=audio 10062 RTP/AVP 0 8 101
b=AS:96
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=ssrc:2158236513 cname:ee2c5e2a2ccf1d26
a=rtcp-rsize
a=rtcp-mux
a=ptime:20
""")

# Linphone leaves out rtpmap for static payload types and sends LF-only here on purpose.
LINPHONE = b"""v=0
o=alice 3112 1203 IN IP4 127.0.0.1
s=Talk
c=IN IP4 127.0.0.1
t=0 0
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
a=record:off
m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 speex/16000
a=fmtp:97 vbr=on
a=rtpmap:98 speex/8000
a=fmtp:98 vbr=on
a=fmtp:18 annexb=yes
a=rtpmap:101 telephone-event/48000
a=rtpmap:99 telephone-event/16000
a=rtpmap:100 telephone-event/8000
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
m=video 9078 RTP/AVP 96 97
a=rtpmap:96 VP8/90000
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42801F
a=recvonly
"""

ASTERISK = crlf("""
v=0
o=- 1929380622 1929380624 IN IP4 127.0.0.1
s=Asterisk
c=IN IP4 127.0.0.1
t=0 0
m=audio 17834 RTP/AVP 0 8 3 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:3 GSM/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=sendonly
""")

IPV6 = crlf("""
v=0
o=- 42 43 IN IP6 ::1
s=-
c=IN IP6 ::1
t=0 0
m=audio 4000 RTP/AVP 8 0
a=rtpmap:8 PCMA/8000
a=inactive
""")


def test_baresip() -> None:
    sdp = parse_sdp(BARESIP)
    assert sdp.version == 0
    assert sdp.origin == Origin("-", 1725547064, 3061297329, "IN", "IP4", "127.0.0.1")
    assert sdp.session_name == "-"
    assert sdp.connection == Connection("IN", "IP4", "127.0.0.1")
    assert sdp.time == (0, 0)
    assert sdp.attributes == [("tool", "baresip 1.0.0")]
    [audio] = sdp.media
    assert (audio.media, audio.port, audio.port_count, audio.proto) == (
        "audio",
        10062,
        None,
        "RTP/AVP",
    )
    assert audio.formats == ["0", "8", "101"]
    assert audio.connection is None
    assert audio.bandwidths == [("AS", 96)]
    assert rtpmap(audio) == {
        0: ("PCMU", 8000, 1),
        8: ("PCMA", 8000, 1),
        101: ("telephone-event", 8000, 1),
    }
    assert fmtp(audio) == {101: "0-15"}
    assert direction(sdp, audio) == "sendrecv"
    assert audio.has_attribute("rtcp-mux")
    assert audio.attribute("rtcp-mux") is None
    assert audio.attribute("ptime") == "20"
    assert audio.attribute("ssrc") == "2158236513 cname:ee2c5e2a2ccf1d26"
    assert connection_address(sdp, audio) == "127.0.0.1"
    assert sdp.serialize() == BARESIP


def test_linphone_lf_only_and_two_streams() -> None:
    sdp = parse_sdp(LINPHONE)
    assert sdp.session_name == "Talk"
    assert sdp.attributes[0] == (
        "rtcp-xr",
        "rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics",
    )
    audio, video = sdp.media
    assert audio.formats == ["96", "97", "98", "0", "8", "18", "101", "99", "100"]
    maps = rtpmap(audio)
    assert maps[96] == ("opus", 48000, 2)
    assert maps[100] == ("telephone-event", 8000, 1)
    assert 0 not in maps  # static types without rtpmap
    assert fmtp(audio)[18] == "annexb=yes"
    assert audio.attribute_values("rtcp-fb") == ["* trr-int 1000", "* ccm tmmbr"]
    assert video.media == "video"
    assert direction(sdp, video) == "recvonly"
    assert direction(video) == "recvonly"
    assert direction(sdp, audio) == "sendrecv"
    assert sdp.serialize() == LINPHONE.replace(b"\n", b"\r\n")


def test_asterisk_sendonly() -> None:
    sdp = parse_sdp(ASTERISK)
    [audio] = sdp.media
    assert direction(sdp, audio) == "sendonly"
    assert audio.attribute("maxptime") == "150"
    assert rtpmap(audio)[3] == ("GSM", 8000, 1)
    assert sdp.serialize() == ASTERISK


def test_ipv6() -> None:
    sdp = parse_sdp(IPV6)
    assert sdp.origin.addrtype == "IP6"
    assert sdp.connection == Connection("IN", "IP6", "::1")
    [audio] = sdp.media
    assert connection_address(sdp, audio) == "::1"
    assert direction(sdp, audio) == "inactive"
    assert sdp.serialize() == IPV6


def test_media_level_connection_and_direction_override_session() -> None:
    sdp = parse_sdp(
        crlf("""
v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
a=sendonly
m=audio 5000 RTP/AVP 0
c=IN IP4 127.0.0.2
a=recvonly
m=audio 5002 RTP/AVP 0
""")
    )
    first, second = sdp.media
    assert connection_address(sdp, first) == "127.0.0.2"
    assert connection_address(sdp, second) == "127.0.0.1"
    assert direction(sdp, first) == "recvonly"
    assert direction(sdp, second) == "sendonly"
    assert direction(sdp) == "sendonly"
    assert direction(second) == "sendrecv"


def test_every_line_type_round_trips_in_rfc_order() -> None:
    text = crlf("""
v=0
o=jdoe 2890844526 2890842807 IN IP4 127.0.0.1
s=SDP Seminar
i=A Seminar on the session description protocol
u=http://www.example.com/seminars/sdp.pdf
e=j.doe@example.com (Jane Doe)
p=+1 617 555-6011
c=IN IP4 224.2.17.12/127
b=CT:128
t=2873397496 2873404696
r=7d 1h 0 25h
z=2882844526 -1h
k=prompt
x=an unknown line type (kept before the attributes)
a=recvonly
m=audio 49170/2 RTP/AVP 0
i=the audio
c=IN IP4 224.2.17.12/127/3
b=AS:64
k=prompt
a=quality:10
m=application 32416 udp wb
a=orient:portrait
""")
    sdp = parse_sdp(text)
    assert sdp.connection == Connection("IN", "IP4", "224.2.17.12", ttl=127)
    assert sdp.bandwidths == [("CT", 128)]
    assert sdp.time == (2873397496, 2873404696)
    audio, app = sdp.media
    assert audio.port_count == 2
    assert audio.connection == Connection("IN", "IP4", "224.2.17.12", ttl=127, count=3)
    assert app.formats == ["wb"]  # non-RTP formats are free-form
    assert sdp.serialize() == text


def test_lenient_input() -> None:
    sdp = parse_sdp(
        b"v=0\n\no=- 1 2 IN IP4 127.0.0.1\r\ns=\r\nc=IN IP4 127.0.0.1\nb=AS:fast\n"
        b"m=audio 5004 RTP/AVP 0 \r\na=rtpmap:0 PCMU/8000  \na=sendrecv \na=rtpmap:bad\n\n"
    )
    assert sdp.session_name == ""
    assert sdp.time == (0, 0)  # missing t= defaults
    assert sdp.bandwidths == []  # malformed b= dropped
    [audio] = sdp.media
    assert audio.formats == ["0"]
    assert direction(sdp, audio) == "sendrecv"
    assert rtpmap(audio) == {0: ("PCMU", 8000, 1)}
    assert b"s= \r\n" in sdp.serialize()  # RFC 8866 section 5.3: "s= " for no name


def test_rejected_stream_without_connection_or_formats() -> None:
    sdp = parse_sdp(
        crlf("""
v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
t=0 0
m=video 0 RTP/AVP
""")
    )
    assert sdp.media[0].port == 0
    assert sdp.media[0].formats == []
    assert connection_address(sdp, sdp.media[0]) is None


def test_rtpmap_and_fmtp_skip_junk() -> None:
    media = MediaDescription(
        "audio",
        1,
        "RTP/AVP",
        ["0"],
        attributes=[
            ("rtpmap", None),
            ("rtpmap", "x PCMU/8000"),
            ("rtpmap", "96 opus"),
            ("rtpmap", "97 L16/abc"),
            ("rtpmap", "98 /8000"),
            ("rtpmap", "99 opus/48000/2"),
            ("rtpmap", "99 other/8000"),
            ("fmtp", None),
            ("fmtp", "x y"),
            ("fmtp", "99 a=b; c=d"),
        ],
    )
    assert rtpmap(media) == {99: ("opus", 48000, 2)}
    assert fmtp(media) == {99: "a=b; c=d"}


FUZZ_LINES = [
    "v=0",
    "o=- 1 1 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "c=IN IP6 ::1",
    "c=IN IP4 0.0.0.0",
    "t=0 0",
    "m=audio 5004 RTP/AVP 0 8 101",
    "m=video 0 RTP/AVP 96",
    "a=rtpmap:101 telephone-event/8000",
    "a=sendonly",
    "a=fmtp:101 0-16",
    "b=AS:64",
    "x=unknown",
    "i=info",
    "",
]

MINIMAL = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL + "m=audio 5004\n", "m= needs"),
        (MINIMAL + "m=audio abc RTP/AVP 0\n", "bad m= port 'abc'"),
        (MINIMAL + "m=audio 70000 RTP/AVP 0\n", "bad m= port '70000'"),
        (MINIMAL + "m=audio 5004/0 RTP/AVP 0\n", "bad m= port count"),
        (MINIMAL + "m=audio 5004 RTP/AVP\n", "without formats"),
        (MINIMAL + "m=audio 5004 RTP/AVP 0 128\n", "bad RTP payload type '128'"),
        (MINIMAL + "m=audio 5004 RTP/AVP PCMU\n", "bad RTP payload type 'PCMU'"),
        (MINIMAL + "m=audio 5004 RTP/AVP \u00b2\n", "bad RTP payload type"),
        (MINIMAL + "m=audio 5004 RTP/AVP 0\nc=IN IP4\n", "c= needs"),
        (MINIMAL + "m=audio 5004 RTP/AVP 0\nc=IN IP4 1.2.3\n", "bad IP4 address '1.2.3'"),
        (MINIMAL + "m=audio 5004 RTP/AVP 0\nc=IN IP4 ::1\n", "does not match IP4"),
        (MINIMAL + "m=audio 5004 RTP/AVP 0\nc=IN IP6 127.0.0.1\n", "does not match IP6"),
        (MINIMAL + "m=audio 5004 RTP/AVP 0\nc=IN IP6 ::g\n", "bad IP6 address"),
        (MINIMAL + "m=audio 5004 RTP/AVP 0\nc=IN IP4 bad_host!\n", "bad IP4 address"),
        (MINIMAL + "m=audio 5004 RTP/AVP 0\nc=IN IP4 1.2.3.4/x\n", "bad c= address"),
        (MINIMAL + "m=audio 5004 RTP/AVP 0\nc=IN IP6 ff15::1/3/4\n", "bad c= address"),
        ("v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nt=0 0\nm=audio 5004 RTP/AVP 0\n", "no c= line"),
        ("o=- 1 1 IN IP4 127.0.0.1\ns=-\n", "missing v="),
        ("v=0\ns=-\n", "missing o="),
        ("v=1\n", "unsupported SDP version"),
        ("v=0\nv=0\n", "second v="),
        ("v=0\no=- 1 IN IP4 127.0.0.1\n", "o= needs 6 fields"),
        ("v=0\no=- x 1 IN IP4 127.0.0.1\n", "must be numeric"),
        (MINIMAL.replace("t=0 0", "t=now"), "t= needs"),
        (MINIMAL + "garbage\n", "line 6: 'garbage' is not <type>=<value>"),
    ],
)
def test_errors(text: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(text.encode())
    assert message in str(info.value)


def test_error_is_a_value_error() -> None:
    assert issubclass(SdpError, ValueError)


def test_fqdn_and_multicast_ip6_connections() -> None:
    sdp = parse_sdp((MINIMAL + "m=audio 5004 RTP/AVP 0\nc=IN IP4 media.example.com\n").encode())
    assert connection_address(sdp, sdp.media[0]) == "media.example.com"
    sdp = parse_sdp((MINIMAL + "m=audio 5004 RTP/AVP 0\nc=IN IP6 ff15::101/3\n").encode())
    assert sdp.media[0].connection == Connection("IN", "IP6", "ff15::101", count=3)


def test_build_and_serialize() -> None:
    audio = MediaDescription(
        "audio", 4000, "RTP/AVP", ["0"], attributes=[("rtpmap", "0 PCMU/8000"), ("sendrecv", None)]
    )
    sdp = SessionDescription(
        origin=Origin("-", 7, 8, "IN", "IP4", "127.0.0.1"),
        connection=Connection.for_address("127.0.0.1"),
        media=[audio],
    )
    assert bytes(sdp) == crlf("""
v=0
o=- 7 8 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 4000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=sendrecv
""")
    assert parse_sdp(bytes(sdp)) == sdp
    assert Connection.for_address("::1").addrtype == "IP6"
    assert Connection.for_address("host.example").addrtype == "IP4"


def test_serialize_refuses_injected_line_breaks() -> None:
    sdp = SessionDescription(origin=Origin("-", 1, 1, "IN", "IP4", "127.0.0.1"))
    sdp.attributes.append(("tool", "x\r\nm=audio 1 RTP/AVP 0"))
    with pytest.raises(SdpError, match="CR or LF"):
        sdp.serialize()


def test_model_validation() -> None:
    with pytest.raises(SdpError, match="o= username"):
        Origin("two words", 1, 1, "IN", "IP4", "127.0.0.1")
    with pytest.raises(SdpError, match="negative"):
        Origin("-", -1, 1, "IN", "IP4", "127.0.0.1")
    with pytest.raises(SdpError, match="c= address"):
        Connection("IN", "IP4", "")


def test_session_level_attribute_helpers() -> None:
    sdp = parse_sdp(BARESIP)
    assert sdp.attribute("tool") == "baresip 1.0.0"
    assert sdp.attribute("nothing") is None
    assert sdp.has_attribute("tool")
    assert not sdp.has_attribute("sendrecv")
    assert sdp.media[0].attribute("nothing") is None


@given(
    st.binary(max_size=300)
    | st.lists(st.sampled_from(FUZZ_LINES), max_size=12).map(
        lambda lines: "\n".join(lines).encode()
    )
)
@settings(max_examples=300, deadline=None)
def test_fuzz_parse_it_or_raise_sdp_error(data: bytes) -> None:
    try:
        sdp = parse_sdp(data)
    except SdpError:
        return
    again = parse_sdp(sdp.serialize())
    assert again.serialize() == sdp.serialize()


# -- hostile input: huge numbers and control characters (found by tests/fuzz/test_model.py) ---

HUGE = "9" * 5000
AUDIO = "m=audio 5004 RTP/AVP 0 96\nc=IN IP4 192.0.2.1\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"v=0\no=- {HUGE} 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n", "must be numeric"),
        (f"v=0\no=- 1 {'1' * 21} IN IP4 192.0.2.1\ns=-\nt=0 0\n", "at most 20 digits"),
        (MINIMAL.replace("t=0 0", f"t=0 {HUGE}"), "t= needs"),
        (MINIMAL + f"m=audio {HUGE} RTP/AVP 0\n", "bad m= port"),
        (MINIMAL + f"m=audio 5004/{HUGE} RTP/AVP 0\n", "bad m= port count"),
        (MINIMAL + f"m=audio 5004 RTP/AVP 0 {HUGE}\n", "bad RTP payload type"),
        (MINIMAL + f"m=audio 5004 RTP/AVP 0\nc=IN IP4 224.2.1.1/{HUGE}\n", "bad c= address"),
    ],
    ids=["sess-id", "sess-version", "t=", "m=port", "m=port-count", "m=pt", "c=ttl"],
)
def test_huge_numbers_are_sdp_errors(text: str, message: str) -> None:
    """A 5000-digit number is malformed SDP, not a ValueError from int() (Python refuses to
    convert more than 4300 digits) and not a slow conversion."""
    with pytest.raises(SdpError, match=message):
        parse_sdp(text.encode())


def test_huge_numbers_in_lenient_lines_are_ignored() -> None:
    text = (
        MINIMAL
        + AUDIO
        + (
            f"b=AS:{HUGE}\na=rtpmap:{HUGE} PCMU/8000\na=rtpmap:96 opus/{HUGE}/2\n"
            f"a=rtpmap:96 opus/48000/{HUGE}\na=fmtp:{HUGE} x=1\n"
        )
    )
    sdp = parse_sdp(text.encode())
    media = sdp.media[0]
    assert media.bandwidths == []
    assert rtpmap(media) == {}
    assert fmtp(media) == {}


@pytest.mark.parametrize(
    "line",
    [
        "a=rtpmap:96 op\x01us/48000/2",
        "a=fmtp:96 useinbandfec=1\rmaxaveragebitrate=20000",
        "a=fmtp:96 useinbandfec=1\x00",
        "s=\x1b[2J",
        "a=ptime:\t20",
        "a=sendrecv\x7f",
        "i=a\r\rb",
    ],
)
def test_control_characters_are_sdp_errors(line: str) -> None:
    """RFC 8866 section 9: no control characters in SDP text (a CR inside an fmtp once broke
    the answer: CodecSpec refuses it with a plain ValueError)."""
    with pytest.raises(SdpError, match="control character"):
        parse_sdp((MINIMAL + AUDIO + line + "\r\n").encode())


def test_crlf_and_lf_line_ends_are_no_control_characters() -> None:
    text = (MINIMAL + AUDIO).replace("\n", "\r\n") + "a=ptime:20\n"
    assert parse_sdp(text.encode()).media[0].attribute("ptime") == "20"


def test_non_ascii_type_letter_is_refused() -> None:
    with pytest.raises(SdpError, match="is not <type>=<value>"):
        parse_sdp((MINIMAL + "\u00e9=x\n").encode())

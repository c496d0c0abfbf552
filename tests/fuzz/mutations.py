"""Strategies of the fuzz harness: seed inputs and the mutations applied to them.

Seeds are real messages: the RFC 4475 torture set (``tests/data/rfc4475``) and the captures of
``tests/data/fuzz`` (INVITEs with SDP, 18x/200/401 responses, a re-INVITE, ACK with SDP,
REFER, NOTIFY with sipfrag, BYE, OPTIONS). :func:`mutated` applies one to eight mutations of
the kinds a hostile or broken peer produces: flipped bits and bytes, inserted and deleted
chunks, dangerous tokens (NUL, bare CR/LF, DEL, 5000-digit numbers, %00, quotes, brackets),
duplicated lines, numbers replaced by huge or negative ones, repeated chunks and truncation.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from hypothesis import strategies as st

DATA = Path(__file__).resolve().parents[1] / "data"

HUGE = b"9" * 5000
TOKENS: tuple[bytes, ...] = (
    b"\x00",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\r\n ",
    b"\t",
    b" ",
    b"\x7f",
    b"\x1b[2J",
    b"\x01",
    b"%00",
    b"%",
    b"\\",
    b'"',
    b"<",
    b">",
    b";",
    b",",
    b":",
    b"=",
    b"/",
    b"@",
    b"?",
    b"[",
    b"]",
    b"\xff\xfe",
    b"\xc3\x28",
    "é²".encode(),
    HUGE,
    b"-1",
    b"0",
    b"4294967296",
    b"18446744073709551616",
    b"65536",
    b"nan",
    b"1e999",
    b";tag=",
    b";branch=z9hG4bK",
    b";rport",
    b";expires=",
    b"sips:",
    b"tel:",
    b"a=rtpmap:",
    b"a=fmtp:",
    b"m=audio ",
    b"c=IN IP6 ",
    b"telephone-event/",
)
_NUMBER_RE = re.compile(rb"[0-9]+")
_REPLACEMENTS = (HUGE, b"0", b"-1", b"4294967296", b"65536", b"128", b"00000000000000000001")


@cache
def sip_seeds() -> tuple[bytes, ...]:
    """Every SIP message of the RFC 4475 set and of tests/data/fuzz."""
    files = sorted((DATA / "rfc4475").glob("*.dat")) + sorted((DATA / "fuzz").glob("*.sip"))
    return tuple(path.read_bytes() for path in files)


@cache
def capture_seeds() -> tuple[bytes, ...]:
    """The realistic captures of tests/data/fuzz only."""
    return tuple(path.read_bytes() for path in sorted((DATA / "fuzz").glob("*.sip")))


@cache
def sdp_seeds() -> tuple[bytes, ...]:
    """The SDP bodies of the seed messages."""
    bodies = []
    for data in sip_seeds():
        _head, sep, body = data.partition(b"\r\n\r\n")
        if sep and body.startswith(b"v=0"):
            bodies.append(body)
    return tuple(bodies)


def _mutate_once(draw: st.DrawFn, data: bytearray) -> bytearray:
    kind = draw(
        st.sampled_from(
            ("flip", "byte", "insert", "token", "delete", "dup_line", "number", "repeat", "cut")
        )
    )
    size = len(data)
    pos = draw(st.integers(0, size))
    if kind == "flip" and size:
        data[min(pos, size - 1)] ^= 1 << draw(st.integers(0, 7))
    elif kind == "byte" and size:
        data[min(pos, size - 1)] = draw(st.integers(0, 255))
    elif kind == "insert":
        data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    elif kind == "token":
        data[pos:pos] = draw(st.sampled_from(TOKENS))
    elif kind == "delete":
        del data[pos : pos + draw(st.integers(1, 64))]
    elif kind == "dup_line":
        lines = bytes(data).split(b"\n")
        line = draw(st.sampled_from(lines))
        lines.insert(draw(st.integers(0, len(lines))), line)
        data = bytearray(b"\n".join(lines))
    elif kind == "number":
        numbers = list(_NUMBER_RE.finditer(data))
        if numbers:
            match = draw(st.sampled_from(numbers))
            data[match.start() : match.end()] = draw(st.sampled_from(_REPLACEMENTS))
    elif kind == "repeat" and size:
        chunk = bytes(data[pos : pos + draw(st.integers(1, 32))])
        data[pos:pos] = chunk * draw(st.integers(2, 200))
    elif kind == "cut":
        del data[pos:]
    return data


@st.composite
def mutated(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    """One of ``seeds`` with one to eight mutations applied."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        data = _mutate_once(draw, data)
    return bytes(data)


def inputs(seeds: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    """Mutated seeds mostly, some seeds as they are, and some raw bytes."""
    return st.one_of(
        mutated(seeds),
        st.sampled_from(seeds),
        st.binary(max_size=512),
    )


# -- structured generation --------------------------------------------------------------------

#: Text for header values and SDP fields: mostly printable, with the characters that matter.
_ALPHABET = st.sampled_from(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    " \t-.!%*_+`'~;,:=/@?&<>\"\\[]()$#é²\x00\r\n\x7f\x01"
)
text = st.text(_ALPHABET, max_size=40)
token = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"),
    min_size=1,
    max_size=12,
)
numbers = st.one_of(
    st.integers(0, 70000).map(str),
    st.sampled_from(["-1", "00", "4294967296", "2147483648", "9" * 5000, "1²", "٣", "+5", " 7 "]),
)
hosts = st.sampled_from(
    ["192.0.2.1", "[2001:db8::1]", "example.com", "a-b.example.org.", "[::1", "1.2.3", "-x", ""]
)
METHODS = (
    "INVITE",
    "ACK",
    "CANCEL",
    "BYE",
    "OPTIONS",
    "INFO",
    "MESSAGE",
    "REFER",
    "NOTIFY",
    "UPDATE",
    "SUBSCRIBE",
    "REGISTER",
    "PRACK",
)


@st.composite
def uris(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["sip", "sips", "tel", "SIP", "mailto", "x"]))
    user = draw(st.one_of(st.none(), token, st.sampled_from(["%00", "a%00b", "%2", "a:b", "+1"])))
    port = draw(st.one_of(st.none(), numbers))
    params = draw(st.lists(st.tuples(token, st.one_of(st.none(), token, text)), max_size=3))
    out = f"{scheme}:" + (f"{user}@" if user else "") + draw(hosts)
    if port is not None:
        out += f":{port}"
    out += "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)
    return out


@st.composite
def name_addrs(draw: st.DrawFn) -> str:
    display = draw(
        st.one_of(st.none(), text.map(lambda t: f'"{t}" '), token.map(lambda t: t + " "))
    )
    uri = draw(uris())
    tag = draw(st.one_of(st.none(), token, text))
    value = f"{display or ''}<{uri}>" if draw(st.booleans()) or display else uri
    return value + (f";tag={tag}" if tag is not None else "")


@st.composite
def vias(draw: st.DrawFn) -> str:
    transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "WS", "udp", "X"]))
    port = draw(st.one_of(st.none(), numbers))
    params = draw(
        st.lists(
            st.sampled_from(
                [
                    "branch=z9hG4bK776",
                    "branch=z9hG4bK" + "a" * 30,
                    "rport",
                    "rport=5060",
                    "received=192.0.2.9",
                    "branch=",
                    "ttl=1",
                    "maddr=224.2.0.1",
                    "rport=" + "9" * 50,
                ]
            ),
            max_size=3,
        )
    )
    sent_by = draw(hosts) + (f":{port}" if port is not None else "")
    return f"SIP/2.0/{transport} {sent_by}" + "".join(f";{p}" for p in params)


@st.composite
def sip_messages(draw: st.DrawFn, body: st.SearchStrategy[bytes] | None = None) -> bytes:
    """A SIP request or response built field by field, valid or nearly so."""
    method = draw(st.one_of(st.sampled_from(METHODS), token))
    if draw(st.booleans()):
        start = f"{method} {draw(uris())} SIP/2.0"
    else:
        start = f"SIP/2.0 {draw(st.one_of(st.integers(100, 699).map(str), numbers))} {draw(text)}"
    cseq_method = method if draw(st.integers(0, 9)) else draw(token)
    headers = [
        ("Via", draw(vias())),
        ("From", draw(name_addrs())),
        ("To", draw(name_addrs())),
        ("Call-ID", draw(st.one_of(token, text))),
        ("CSeq", f"{draw(numbers)} {cseq_method}"),
        ("Max-Forwards", draw(numbers)),
    ]
    optional = {
        "Contact": name_addrs(),
        "Expires": numbers,
        "Retry-After": numbers,
        "Min-Expires": numbers,
        "Record-Route": name_addrs(),
        "Route": name_addrs(),
        "Require": token,
        "Supported": token,
        "Accept": st.sampled_from(["application/sdp", "text/plain", "*/*", ""]),
        "Content-Type": st.sampled_from(["application/sdp", "message/sipfrag", "text/plain"]),
        "Refer-To": name_addrs(),
        "Event": st.sampled_from(["refer", "refer;id=7", "dialog", ""]),
        "Subscription-State": st.sampled_from(
            ["active;expires=60", "terminated;reason=noresource"]
        ),
        "X-Custom": text,
        "Timestamp": numbers,
        "RSeq": numbers,
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), max_size=5)):
        headers.append((name, draw(optional[name])))
    headers = draw(st.permutations(headers)) if draw(st.booleans()) else headers
    payload = draw(body) if body is not None else b""
    length = draw(st.one_of(st.just(str(len(payload))), numbers, st.none()))
    if length is not None:
        headers.append(("Content-Length", length))
    head = start + "".join(f"\r\n{n}: {v}" for n, v in headers) + "\r\n\r\n"
    return head.encode("utf-8", "surrogatepass") + payload


@st.composite
def sdp_bodies(draw: st.DrawFn) -> bytes:
    """An SDP offer or answer built line by line, valid or nearly so."""
    addrtype, address = draw(
        st.sampled_from(
            [
                ("IP4", "192.0.2.10"),
                ("IP6", "2001:db8::1"),
                ("IP4", "0.0.0.0"),
                ("IP4", "pbx.example.com"),
                ("IP6", "192.0.2.1"),
                ("IP4", "300.1.1.1"),
                ("X", "y"),
            ]
        )
    )
    lines = [
        "v=0",
        f"o={draw(token)} {draw(numbers)} {draw(numbers)} IN {addrtype} {address}",
        f"s={draw(text)}",
    ]
    if draw(st.booleans()):
        lines.append(f"c=IN {addrtype} {address}")
    lines.append(f"t={draw(numbers)} {draw(numbers)}")
    for _ in range(draw(st.integers(0, 3))):
        media = draw(st.sampled_from(["audio", "audio", "video", "image", draw(token)]))
        proto = draw(st.sampled_from(["RTP/AVP", "RTP/AVP", "RTP/SAVP", "udptl", "RTP/AVPF"]))
        formats = draw(
            st.lists(
                st.one_of(st.sampled_from(["0", "8", "9", "96", "101"]), numbers),
                min_size=1,
                max_size=6,
            )
        )
        lines.append(f"m={media} {draw(numbers)} {proto} {' '.join(formats)}")
        if draw(st.booleans()):
            lines.append(f"c=IN {addrtype} {address}")
        for _ in range(draw(st.integers(0, 8))):
            lines.append(draw(_attribute_lines(formats, f"IN {addrtype} {address}")))
    end = draw(st.sampled_from(["\r\n", "\n"]))
    return (end.join(lines) + end).encode("utf-8", "surrogatepass")


_ENCODINGS = st.sampled_from(["PCMU", "PCMA", "G722", "opus", "telephone-event", "x y", "OPUS"])
_DIRECTIONS = st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive", "rtcp-mux"])


@st.composite
def _attribute_lines(draw: st.DrawFn, formats: list[str], connection: str) -> str:
    """One a= or b= line of a media section, about one of ``formats`` (or another number)."""
    pt = draw(st.one_of(st.sampled_from(formats), numbers))
    kind = draw(st.sampled_from(["rtpmap", "fmtp", "opus", "ptime", "rtcp", "dir", "b", "other"]))
    if kind == "rtpmap":
        channels = draw(st.sampled_from(["", "/2", "/1", "/0"]) | numbers.map(lambda n: "/" + n))
        return f"a=rtpmap:{pt} {draw(_ENCODINGS)}/{draw(numbers)}{channels}"
    if kind == "fmtp":
        return f"a=fmtp:{pt} {draw(text)}"
    if kind == "opus":
        rate, playback = draw(numbers), draw(numbers)
        return f"a=fmtp:{pt} maxaveragebitrate={rate};maxplaybackrate={playback};useinbandfec=1"
    if kind == "ptime":
        return f"a=ptime:{draw(numbers | st.sampled_from(['nan', 'inf', '1e999', '0.5']))}"
    if kind == "rtcp":
        return f"a=rtcp:{draw(numbers)}" + draw(st.sampled_from(["", " " + connection]))
    if kind == "dir":
        return f"a={draw(_DIRECTIONS)}"
    if kind == "b":
        return f"b={draw(st.sampled_from(['AS', 'TIAS', 'CT', '']))}:{draw(numbers)}"
    return f"a={draw(token)}:{draw(text)}"


@st.composite
def mutations_of(draw: st.DrawFn, data: bytes, most: int = 3) -> bytes:
    """``data`` with zero to ``most`` mutations: messages built during a run (in a dialog)."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, most))):
        out = _mutate_once(draw, out)
    return bytes(out)

"""The RFC 4475 torture messages through the endpoint's UAS checks (RFC 3261 section 8.2).

Every row of `tests/data/rfc4475/MANIFEST.tsv` is fed to a fresh sans-I/O `Endpoint` as a UDP
datagram from 127.0.0.1:5999, and the outputs must be what the manifest names: a response of the
named status (as a `Send`), a `RequestReceived` for requests processed normally (INVITE also gets
its 100 Trying), 405 with Allow for methods siproc does not take (REGISTER: siproc is no
registrar), nothing at all for responses. Every `Send` goes to 127.0.0.1, never to the
documentation addresses in the messages' Via headers: port per RFC 3261 section 18.2.2 and
RFC 3581 section 4 (the source port when rport is present, else the sent-by port or 5060).

The second half checks the UAS checks one by one with small hand-made requests.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siproc.sip.endpoint import Endpoint, Output, RequestReceived
from siproc.sip.errors import ParseError
from siproc.sip.framing import StreamFramer
from siproc.sip.headers import has_tag, message_info, parse_via
from siproc.sip.message import Request, Response, parse_message
from siproc.sip.transaction import Destination, Send

DATA = Path(__file__).resolve().parents[1] / "data" / "rfc4475"
ALLOW = ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "MESSAGE"]
SOURCE = Destination("udp", "127.0.0.1", 5999)
TCP_SOURCE = Destination("tcp", "127.0.0.1", 40000)
LOCAL = "127.0.0.1"


def load_manifest() -> list[dict[str, str]]:
    with (DATA / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


MANIFEST = load_manifest()
ROWS = {row["file"]: row for row in MANIFEST}


def endpoint() -> Endpoint:
    return Endpoint(allow=ALLOW, rng=random.Random(4475))


def feed(data: bytes, ep: Endpoint | None = None, source: Destination = SOURCE) -> list[Output]:
    return (ep or endpoint()).receive(data, source, LOCAL, now=0.0)


def sends(outputs: list[Output]) -> list[Send]:
    return [o for o in outputs if isinstance(o, Send)]


def responses(outputs: list[Output]) -> list[Response]:
    out = []
    for send in sends(outputs):
        message = parse_message(send.data)
        assert isinstance(message, Response), send.data[:80]
        out.append(message)
    return out


def received(outputs: list[Output]) -> list[RequestReceived]:
    return [o for o in outputs if isinstance(o, RequestReceived)]


def expected_port(response: Response) -> int:
    """RFC 3261 section 18.2.2 and RFC 3581 section 4, from the Via the response copies."""
    via = parse_via(response.headers.get_all("Via")[0])
    if via.rport is not None:
        return SOURCE.port
    return via.port or 5060


# -- what each manifest row must produce ---------------------------------------------------------


@dataclass(frozen=True)
class Process:
    """Processed normally: RequestReceived (INVITE: plus a 100 Trying), or, when `or_400`
    (the "tolerable" rows that allow either), a 400."""

    method: str
    or_400: bool = False


@dataclass(frozen=True)
class Status:
    """Exactly one response of `code`, carrying `header` when named."""

    code: int
    header: str | None = None


@dataclass(frozen=True)
class BadOrDrop:
    """A 400, or nothing at all (a request too broken to answer)."""


@dataclass(frozen=True)
class Drop:
    """A response (or worse): no Send, no RequestReceived, no exception."""


Expect = Process | Status | BadOrDrop | Drop

NOT_A_REGISTRAR = Status(405, "Allow")  # REGISTER and unknown methods (RFC 3261 8.2.1)
EXPECTED: dict[str, Expect] = {
    "wsinv.dat": Process("INVITE"),
    "intmeth.dat": NOT_A_REGISTRAR,
    "esc01.dat": Process("INVITE"),
    "escnull.dat": NOT_A_REGISTRAR,
    "esc02.dat": NOT_A_REGISTRAR,
    "lwsdisp.dat": Process("OPTIONS"),
    "longreq.dat": Process("INVITE"),
    "dblreq.dat": NOT_A_REGISTRAR,
    "semiuri.dat": Process("OPTIONS"),
    "transports.dat": Process("OPTIONS"),
    "mpart01.dat": Process("MESSAGE"),
    "unreason.dat": Drop(),
    "noreason.dat": Drop(),
    "badinv01.dat": BadOrDrop(),
    "clerr.dat": BadOrDrop(),
    "ncl.dat": BadOrDrop(),
    "scalar02.dat": Status(400),
    "scalarlg.dat": Drop(),
    "quotbal.dat": Status(400),
    "ltgtruri.dat": Status(400),
    "lwsruri.dat": Status(400),
    "lwsstart.dat": Status(400),
    "trws.dat": Status(400),
    "escruri.dat": Process("INVITE", or_400=True),
    "baddate.dat": Process("INVITE"),
    "regbadct.dat": NOT_A_REGISTRAR,
    "badaspec.dat": Process("OPTIONS", or_400=True),
    "baddn.dat": Process("OPTIONS", or_400=True),
    "badvers.dat": Status(505),
    "mismatch01.dat": Status(400),
    "mismatch02.dat": Status(400),
    "bigcode.dat": Drop(),
    "badbranch.dat": Process("OPTIONS"),
    "insuf.dat": Status(400),
    "unkscm.dat": Status(416),
    "novelsc.dat": Status(416),
    "unksm2.dat": NOT_A_REGISTRAR,
    "bext01.dat": Status(420, "Unsupported"),
    "invut.dat": Status(415, "Accept"),
    "regaut01.dat": NOT_A_REGISTRAR,
    "multi01.dat": Status(400),
    "mcl01.dat": Status(400),
    "bcast.dat": Drop(),
    "zeromf.dat": Process("OPTIONS"),
    "cparam01.dat": NOT_A_REGISTRAR,
    "cparam02.dat": NOT_A_REGISTRAR,
    "regescrt.dat": NOT_A_REGISTRAR,
    "sdp01.dat": Status(406, "Accept"),
    "inv2543.dat": Process("INVITE", or_400=True),
    "test.dat": BadOrDrop(),
}

FILES = [row["file"] for row in MANIFEST]


def test_manifest_and_data_agree() -> None:
    dat = sorted(p.name for p in DATA.glob("*.dat"))
    assert sorted(ROWS) == dat
    assert len(dat) == 50
    assert sorted(EXPECTED) == dat  # a new manifest row needs an expectation here
    for name in dat:
        assert b"\r\n" in (DATA / name).read_bytes(), f"{name} lost its CRLFs"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_expectation_matches_the_manifest_text(name: str) -> None:
    """The table above says what the manifest says, in the manifest's own words."""
    row, expect = ROWS[name], EXPECTED[name]
    what = row["what a user agent server should do with it"]
    data = (DATA / name).read_bytes()
    if isinstance(expect, Drop):
        assert data.startswith(b"SIP/")
        assert "drop" in what or row["class"] == "valid"
    elif isinstance(expect, Status) and expect.code == 405:
        method = data.split(b" ", 1)[0].decode()
        assert "405" in what or method not in ALLOW, (method, what)
    elif isinstance(expect, Status):
        assert str(expect.code) in what
    elif isinstance(expect, BadOrDrop):
        assert "drop" in what or "never crash" in what
    else:
        assert row["class"] in ("valid", "semantic", "tolerable")
        assert not expect.or_400 or row["class"] == "tolerable"


@pytest.mark.parametrize("name", FILES)
def test_torture_message(name: str) -> None:
    data = (DATA / name).read_bytes()
    ep = endpoint()
    outputs = feed(data, ep)
    answers = responses(outputs)
    got = received(outputs)
    expect = EXPECTED[name]

    for send in sends(outputs):
        assert send.destination.host == "127.0.0.1", f"{name}: sent to {send.destination}"
        assert send.destination.transport == "udp"
        assert send.destination.port == expected_port(parse_message(send.data))  # type: ignore[arg-type]

    match expect:
        case Process(method=method, or_400=or_400):
            if or_400 and [r.status for r in answers] == [400]:
                assert got == []
            else:
                assert [r.request.method for r in got] == [method]
                trying = [100] if method == "INVITE" else []
                assert [r.status for r in answers] == trying
                if method == "INVITE":
                    assert answers[0].reason == "Trying"
        case Status(code=code, header=header):
            assert [r.status for r in answers] == [code], [r.start_line() for r in answers]
            assert got == []
            if header is not None:
                assert answers[0].headers.get(header), f"{code} needs {header}"
            if code == 405:
                assert answers[0].headers.get_all("Allow") == ALLOW
        case BadOrDrop():
            assert [r.status for r in answers] in ([], [400])
            assert got == []
        case Drop():
            assert answers == [] and got == []

    request = _parse_or_salvage(data)
    for answer in answers:
        # RFC 3261 section 8.2.6.2: Via, From, To (tagged unless 100), Call-ID, CSeq copied;
        # the top Via may have gained received and rport (section 18.2.1, RFC 3581).
        sent, copied = request.headers.get_all("Via"), answer.headers.get_all("Via")
        assert copied[1:] == sent[1:]
        assert _sent_by(copied[0]) == _sent_by(sent[0])
        for header in ("From", "Call-ID", "CSeq"):
            assert answer.headers.get(header) == request.headers.get(header), header
        if answer.status == 100:  # no tag on a 100 (RFC 3261 section 8.2.6.1)
            assert answer.headers.get("To") == request.headers.get("To")
        elif "To" in request.headers:
            assert has_tag(answer.headers.get("To") or "")
        assert answer.headers.get("Server") == "siproc"

    # The invariant: whatever came in, the endpoint goes on answering valid requests.
    after = feed(_options("after-" + name), ep)
    assert [r.request.method for r in received(after)] == ["OPTIONS"]


def _sent_by(value: str) -> tuple[str, str, int | None, str | None]:
    via = parse_via(value)
    return via.transport, via.host, via.port, via.branch


def _parse_or_salvage(data: bytes) -> Request | Response:
    try:
        return parse_message(data)
    except ParseError as exc:
        return Request("UNKNOWN", "sip:x", exc.headers) if exc.headers else Response(599, "x")


def test_dblreq_answers_only_the_first_message() -> None:
    # RFC 4475 section 3.1.1.8: the INVITE after Content-Length is never seen.
    outputs = feed((DATA / "dblreq.dat").read_bytes())
    assert [(r.status, r.headers.get("CSeq")) for r in responses(outputs)] == [(405, "8 REGISTER")]
    assert received(outputs) == []


def test_badbranch_retransmission_matches_by_rfc2543_rules() -> None:
    # RFC 4475 section 3.2.1: a bare magic cookie is no RFC 3261 branch.
    ep = endpoint()
    data = (DATA / "badbranch.dat").read_bytes()
    first = feed(data, ep)
    assert len(received(first)) == 1
    assert received(feed(data, ep)) == []  # the same request again: a retransmission


def test_bcast_and_unreason_responses_send_nothing() -> None:
    for name in ("bcast.dat", "unreason.dat", "noreason.dat", "scalarlg.dat", "bigcode.dat"):
        ep = endpoint()
        assert sends(feed((DATA / name).read_bytes(), ep)) == []
        assert ep.transaction_count == 0


# -- the UAS checks one by one (RFC 3261 section 8.2) --------------------------------------------


def _request(
    method: str = "OPTIONS",
    *,
    uri: str = "sip:bob@127.0.0.1",
    version: str = "SIP/2.0",
    via: str = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKuas1",
    cseq: str | None = None,
    extra: str = "",
    body: bytes = b"",
    call_id: str = "uas-checks@127.0.0.1",
) -> bytes:
    head = (
        f"{method} {uri} {version}\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
        "To: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq or '1 ' + method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _options(call_id: str) -> bytes:
    return _request(call_id=call_id, via=f"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{call_id}")


def _one_response(outputs: list[Output]) -> Response:
    answers = responses(outputs)
    assert len(answers) == 1, [r.start_line() for r in answers]
    assert received(outputs) == []
    return answers[0]


def test_version_is_checked_first() -> None:
    answer = _one_response(feed(_request("FOO", version="SIP/3.0")))
    assert (answer.status, answer.reason) == (505, "Version Not Supported")


def test_unknown_method_gets_405_with_allow() -> None:
    answer = _one_response(feed(_request("SUBSCRIBE")))
    assert answer.status == 405
    assert answer.headers.get("Allow") == ", ".join(ALLOW)
    assert message_info(answer).to.tag  # a final response gets a To tag


@pytest.mark.parametrize(
    ("uri", "status"),
    [
        ("tel:+1-201-555-0123", 416),
        ("mailto:bob@example.com", 416),
        ("sip:bob@127.0.0.1:99999", 400),
        ("sip:bob@bad_host", 400),
    ],
)
def test_request_uri_checks(uri: str, status: int) -> None:
    assert _one_response(feed(_request(uri=uri))).status == status


def test_require_unknown_extension_gets_420_with_unsupported() -> None:
    supporting = Endpoint(allow=ALLOW, rng=random.Random(4475), supported=["replaces"])
    answer = _one_response(feed(_request(extra="Require: Foo, replaces, bar\r\n"), supporting))
    assert answer.status == 420
    assert answer.headers.get("Unsupported") == "foo, bar"
    ok = feed(_request(extra="Require: replaces\r\n"), supporting)
    assert [r.request.method for r in received(ok)] == ["OPTIONS"]


def test_cancel_ignores_require_and_gets_481_without_invite() -> None:
    answer = _one_response(feed(_request("CANCEL", extra="Require: foo\r\n")))
    assert answer.status == 481


def test_cancel_matches_its_invite() -> None:
    ep = endpoint()
    feed(_request("INVITE"), ep)
    outputs = feed(_request("CANCEL"), ep)
    [cancel] = received(outputs)
    assert cancel.cancelled is not None
    assert cancel.cancelled.method == "INVITE"


def test_invite_body_checks() -> None:
    answer = _one_response(
        feed(_request("INVITE", extra="Content-Type: text/plain\r\n", body=b"hello"))
    )
    assert (answer.status, answer.headers.get("Accept")) == (415, "application/sdp")
    answer = _one_response(feed(_request("INVITE", extra="Accept: text/html\r\n")))
    assert (answer.status, answer.headers.get("Accept")) == (406, "application/sdp")
    for accept in ("application/*", "*/*", "text/html, application/SDP"):
        outputs = feed(_request("INVITE", extra=f"Accept: {accept}\r\n"))
        assert [r.status for r in responses(outputs)] == [100], accept
    sdp = b"v=0\r\n"
    outputs = feed(_request("INVITE", extra="Content-Type: application/sdp\r\n", body=sdp))
    assert len(received(outputs)) == 1
    message = feed(_request("MESSAGE", extra="Content-Type: text/plain\r\n", body=b"hi"))
    assert len(received(message)) == 1  # only INVITE bodies are checked


def test_ack_is_never_answered() -> None:
    # RFC 3261 section 17: an ACK gets no response, whatever is wrong with it.
    for data in (
        _request("ACK", extra="Require: foo\r\n"),
        _request("ACK", version="SIP/3.0"),
        _request("ACK", uri="tel:+1"),
        _request("ACK", cseq="x ACK"),
        _request("ACK", via="SIP/2.0/UDP bad_host"),
    ):
        ep = endpoint()
        assert sends(feed(data, ep)) == [], data.split(b"\r\n", 1)[0]


def test_ack_with_cseq_mismatch_is_not_answered() -> None:
    assert sends(feed(_request("ACK", cseq="1 INVITE"))) == []


def test_broken_request_gets_400_with_the_reason() -> None:
    answer = _one_response(feed(_request(cseq="1 INVITE")))
    assert answer.status == 400
    assert answer.reason.startswith("Bad Request (CSeq method INVITE does not match")
    assert message_info(answer).to.tag


@pytest.mark.parametrize(
    ("via", "source", "port"),
    [
        ("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKp1;rport", SOURCE, 5999),  # RFC 3581
        ("SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKp2", SOURCE, 5070),  # sent-by port
        ("SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKp3", SOURCE, 5060),  # default port
        ("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKp4", SOURCE, 5070),  # never to sent-by host
        ("SIP/2.0/TCP 192.0.2.1:5070;branch=z9hG4bKp5", TCP_SOURCE, 40000),  # the connection
    ],
)
def test_responses_go_to_the_source(via: str, source: Destination, port: int) -> None:
    outputs = feed(_request("INVITE", via=via), source=source)
    [trying] = sends(outputs)
    assert trying.destination == Destination(source.transport, "127.0.0.1", port)


def _top_via(outputs: list[Output]) -> tuple[str | None, str | None]:
    via = parse_via(responses(outputs)[0].headers.get_all("Via")[0])
    return via.received, via.rport


def test_top_via_gets_received_and_rport() -> None:
    # RFC 3261 section 18.2.1 (received) and RFC 3581 section 4 (rport=<source port>).
    via = "SIP/2.0/UDP host.example.com:5070;branch=z9hG4bKr;rport"
    assert _top_via(feed(_request("INVITE", via=via))) == ("127.0.0.1", "5999")
    via = "SIP/2.0/UDP host.example.com:5070;branch=z9hG4bKr2"
    assert _top_via(feed(_request("INVITE", via=via))) == ("127.0.0.1", None)
    via = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKr3"
    assert _top_via(feed(_request("INVITE", via=via))) == (None, None)  # nothing to add
    via = "SIP/2.0/UDP host.example.com:5070;branch=z9hG4bKr4;rport, SIP/2.0/UDP b.example.com"
    outputs = feed(_request("SUBSCRIBE", via=via))  # a 405 too
    assert _top_via(outputs) == ("127.0.0.1", "5999")
    assert responses(outputs)[0].headers.get_all("Via")[1] == "SIP/2.0/UDP b.example.com"


def test_rport_always_gets_received() -> None:
    via = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKr5;rport"
    assert _top_via(feed(_request("INVITE", via=via))) == ("127.0.0.1", "5999")


def test_400_to_a_broken_request_gets_received_and_rport() -> None:
    via = "SIP/2.0/UDP host.example.com:5070;branch=z9hG4bKr6;rport"
    outputs = feed(_request(via=via, cseq="1 INVITE"))
    assert responses(outputs)[0].status == 400
    assert _top_via(outputs) == ("127.0.0.1", "5999")


def test_retransmitted_invite_is_absorbed() -> None:
    ep = endpoint()
    first = feed(_request("INVITE"), ep)
    assert len(received(first)) == 1
    again = feed(_request("INVITE"), ep)
    assert received(again) == []
    assert [r.status for r in responses(again)] == [100]  # the last provisional, resent


def test_stray_responses_are_dropped_and_counted() -> None:
    ep = endpoint()
    data = (
        b"SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKnone\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: stray\r\nCSeq: 1 INVITE\r\n\r\n"
    )
    assert feed(data, ep) == []
    assert feed(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", ep) == []
    assert feed(b"\x00\xff garbage", ep) == []
    assert ep.dropped == 3


def test_broken_response_on_a_stream_is_not_answered() -> None:
    # A response without Content-Length on TCP breaks the stream; it must not draw a 400.
    framer = StreamFramer()
    [error] = framer.feed(
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKs\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: s\r\nCSeq: 1 INVITE\r\n\r\n",
        0.0,
    )
    assert isinstance(error, ParseError)
    tcp = Destination("tcp", "127.0.0.1", 40000)
    assert endpoint().receive_message(error, tcp, LOCAL, 0.0) == []


def test_broken_request_on_a_stream_gets_400_on_the_connection() -> None:
    framer = StreamFramer()
    [error] = framer.feed(_request().replace(b"Content-Length: 0\r\n", b""), 0.0)
    assert isinstance(error, ParseError)
    tcp = Destination("tcp", "127.0.0.1", 40000)
    [send] = sends(endpoint().receive_message(error, tcp, LOCAL, 0.0))
    assert send.destination == tcp
    assert _one_response([send]).status == 400


# -- nothing a peer sends escapes as an exception (DESIGN.md section 1, rule 4) -------------------


def test_unterminated_quote_in_via_is_dropped() -> None:
    ep = endpoint()
    assert feed(_request(via='"SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKq'), ep) == []
    assert ep.dropped == 1


@pytest.mark.parametrize("header", ["Require", "Accept"])
def test_unterminated_quote_in_a_list_header_gets_400(header: str) -> None:
    answer = _one_response(feed(_request("INVITE", extra=f'{header}: "foo\r\n')))
    assert answer.status == 400


_CORPUS = sorted(DATA.glob("*.dat"))


@settings(max_examples=300, deadline=None, report_multiple_bugs=False)
@given(
    st.sampled_from(_CORPUS),
    st.lists(st.tuples(st.integers(0, 2000), st.binary(max_size=3)), max_size=4),
    st.integers(0, 50),
)
def test_property_mutated_messages_are_answered_or_dropped(
    path: Path, edits: list[tuple[int, bytes]], cut: int
) -> None:
    data = bytearray(path.read_bytes())
    for at, replacement in edits:
        at %= len(data) + 1
        data[at : at + len(replacement)] = replacement
    ep = endpoint()
    outputs = feed(bytes(data[: max(1, len(data) - cut)]), ep)
    for send in sends(outputs):
        assert send.destination.host == "127.0.0.1"
        assert isinstance(parse_message(send.data), Response)

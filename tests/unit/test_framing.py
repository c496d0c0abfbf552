"""Stream framing within limits (RFC 3261 section 18.3, RFC 5626 section 3.5.1): framing.py.

`StreamFramer` is fed whole, byte by byte, in random cuts and with trailing data (DESIGN.md
section 4.2). Its work is counted (`scanned`), not timed: a 64 KiB header fed one octet at a time
must cost a small multiple of 64 KiB, not its square. Deadlines run in virtual time.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siproc.sip.endpoint import Endpoint
from siproc.sip.errors import ParseError
from siproc.sip.framing import (
    DEFAULT_MAX_MESSAGE_SIZE,
    StreamFramer,
    StreamLimits,
    too_large_error,
)
from siproc.sip.message import Message, Request, Response, parse_message, serialize
from siproc.sip.transaction import Destination, Send
from tests.unit.test_message import COMPACT, INVITE, RESPONSE, SDP

TCP_A = INVITE
TCP_B = RESPONSE
TCP_C = COMPACT
NO_DEADLINES = StreamLimits(first_message_timeout=None, message_timeout=None)


def messages(items: list[Message | ParseError]) -> list[bytes]:
    """The messages out of a feed, serialized (ParseErrors fail the test)."""
    assert all(not isinstance(i, ParseError) for i in items), items
    return [serialize(i) for i in items if not isinstance(i, ParseError)]


def big_request(size: int, body: bytes = b"") -> bytes:
    """An OPTIONS of exactly `size` octets, padded with X- header lines of 1000 octets."""
    head = (
        b"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKbig\r\n"
        b"From: <sip:alice@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\n"
        b"Call-ID: big@127.0.0.1\r\nCSeq: 7 OPTIONS\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    )
    pad = size - len(head) - 2 - len(body)
    lines = []
    while pad > 0:
        n = min(pad, 1000) if pad - 1000 >= 8 or pad <= 1000 else pad - 8
        lines.append(b"X-Pad: " + b"a" * (n - 9) + b"\r\n")
        pad -= n
    data = head + b"".join(lines) + b"\r\n" + body
    assert len(data) == size
    return data


# -- framing -------------------------------------------------------------------------------------


def test_stream_whole() -> None:
    framer = StreamFramer()
    assert messages(framer.feed(TCP_A, 0.0)) == [serialize(parse_message(TCP_A))]
    assert framer.broken is None
    assert framer.keepalives == 0
    assert framer.messages == 1


def test_stream_byte_by_byte() -> None:
    framer = StreamFramer()
    stream = TCP_A + TCP_B
    out: list[bytes] = []
    completed_at: list[int] = []
    for i in range(len(stream)):
        got = messages(framer.feed(stream[i : i + 1], 0.0))
        if got:
            completed_at.append(i + 1)
        out += got
    assert out == [serialize(parse_message(TCP_A)), serialize(parse_message(TCP_B))]
    assert completed_at == [len(TCP_A), len(stream)]  # each one on its very last byte
    assert framer.broken is None


def test_stream_trailing_data_waits_for_the_rest() -> None:
    framer = StreamFramer()
    cut = len(TCP_B) // 2
    assert len(messages(framer.feed(TCP_A + TCP_B[:cut], 0.0))) == 1
    assert framer.in_message
    assert framer.feed(b"", 0.0) == []
    got = messages(framer.feed(TCP_B[cut:], 0.0))
    assert got == [serialize(parse_message(TCP_B))]
    assert not framer.in_message


def test_stream_body_split_over_chunks() -> None:
    framer = StreamFramer()
    body_start = TCP_A.index(b"\r\n\r\n") + 4
    assert framer.feed(TCP_A[: body_start + 10], 0.0) == []
    assert messages(framer.feed(TCP_A[body_start + 10 :], 0.0))[0].endswith(SDP)


def test_stream_empty_line_split_at_every_point() -> None:
    # The CRLFCRLF straddles two segments at each of its three inner points.
    end = TCP_B.index(b"\r\n\r\n")
    for cut in range(end, end + 4):
        framer = StreamFramer()
        assert framer.feed(TCP_B[:cut], 0.0) == []
        assert messages(framer.feed(TCP_B[cut:], 0.0)) == [serialize(parse_message(TCP_B))]


def test_stream_bare_lf_empty_line() -> None:
    bare = b"OPTIONS sip:a@b SIP/2.0\nCSeq: 1 OPTIONS\nContent-Length: 2\n\nhi"
    for size in (1, 2, len(bare)):
        framer = StreamFramer()
        got = [m for i in range(0, len(bare), size) for m in framer.feed(bare[i : i + size], 0.0)]
        assert len(got) == 1 and isinstance(got[0], Request) and got[0].body == b"hi"


def test_stream_several_messages_in_one_chunk() -> None:
    framer = StreamFramer()
    got = framer.feed(TCP_A + TCP_B + TCP_C, 0.0)
    assert [type(m) for m in got] == [Request, Response, Request]
    assert got[2].body == b"hello"  # type: ignore[union-attr]
    assert framer.messages == 3


def test_stream_crlf_keepalives() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n", 0.0) == []
    assert framer.keepalives == 1
    assert len(framer.feed(b"\r\n\r\n" + TCP_A + b"\r\n\r\n\r\n\r\n" + TCP_B, 0.0)) == 2
    assert framer.keepalives == 4
    assert framer.broken is None


def test_stream_lone_crlf_between_messages_is_ignored() -> None:
    # RFC 3261 section 7.5: CRLFs before a start line are ignored; one CRLF is a pong, no ping.
    framer = StreamFramer()
    got = framer.feed(b"\r\n" + TCP_A + b"\r\n" + TCP_B + b"\r\n", 0.0)
    assert [type(m) for m in got] == [Request, Response]
    assert framer.keepalives == 0
    assert not framer.in_message  # trailing CRLFs start no message and no deadline
    assert framer.next_deadline() is None


def test_stream_keepalive_split_over_segments() -> None:
    # A CRLFCRLF ping cut by TCP segmentation is still one ping (RFC 5626 section 3.5.1).
    framer = StreamFramer()
    for octet in b"\r\n\r\n":
        framer.feed(bytes([octet]), 0.0)
    assert framer.keepalives == 1
    framer.feed(b"\r\n", 0.0)
    assert framer.keepalives == 1
    framer.feed(b"\r\n" + TCP_A[:10], 0.0)
    assert framer.keepalives == 2
    framer.feed(TCP_A[10:] + b"\r\n", 0.0)  # a lone CRLF after a message is no ping
    framer.feed(TCP_B, 0.0)
    assert framer.keepalives == 2


def test_stream_missing_content_length_breaks_the_stream() -> None:
    framer = StreamFramer()
    no_length = TCP_A.replace(b"Content-Length: ", b"X-Length: ")
    got = framer.feed(no_length, 0.0)
    assert len(got) == 1
    error = got[0]
    assert isinstance(error, ParseError)
    assert "Content-Length is mandatory" in str(error)
    assert error.status == 400
    assert error.headers is not None and error.headers.get("CSeq") == "314159 INVITE"
    assert framer.broken == "Content-Length is mandatory on stream transports"
    assert framer.feed(TCP_B, 0.0) == []  # nothing more from a broken stream


def test_stream_missing_content_length_on_a_response_salvages_nothing() -> None:
    framer = StreamFramer()
    got = framer.feed(TCP_B.replace(b"Content-Length: 0\r\n", b""), 0.0)
    assert len(got) == 1 and isinstance(got[0], ParseError)
    assert got[0].headers is None  # the endpoint must not answer a response with 400
    assert framer.broken


def test_stream_unframeable_head_breaks_the_stream() -> None:
    framer = StreamFramer()
    got = framer.feed(TCP_A + b"INVITE  sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n" + TCP_B, 0.0)
    assert isinstance(got[0], Request)
    assert isinstance(got[1], ParseError)
    assert "unframeable message" in str(got[1])
    assert len(got) == 2
    assert framer.broken and framer.broken.startswith("unframeable message")


@settings(max_examples=200)
@given(st.lists(st.integers(0, len(TCP_A + TCP_B + TCP_C) + 8), max_size=12))
def test_property_stream_any_cut_gives_the_same_messages(cuts: list[int]) -> None:
    stream = b"\r\n\r\n" + TCP_A + TCP_B + b"\r\n\r\n" + TCP_C
    whole = StreamFramer()
    expected = messages(whole.feed(stream, 0.0))
    framer = StreamFramer()
    got: list[bytes] = []
    points = [0, *sorted(set(cuts)), len(stream)]
    for start, end in itertools.pairwise(points):
        got += messages(framer.feed(stream[start:end], 0.0))
    assert got == expected
    assert len(got) == 3
    assert framer.keepalives == whole.keepalives == 2
    assert framer.broken is None


# -- linear work -----------------------------------------------------------------------------


def test_64k_header_fed_one_octet_at_a_time_costs_linear_work() -> None:
    data = big_request(DEFAULT_MAX_MESSAGE_SIZE)  # exactly at the limit: accepted
    whole = StreamFramer()
    [message] = whole.feed(data, 0.0)
    assert isinstance(message, Request) and message.headers.get("CSeq") == "7 OPTIONS"
    framer = StreamFramer()
    got: list[Message | ParseError] = []
    for i in range(len(data)):
        got += framer.feed(data[i : i + 1], 0.0)
    assert len(got) == 1 and serialize(got[0]) == serialize(message)  # type: ignore[arg-type]
    # Each octet is examined a few times (two patterns, a 3-octet overlap), never re-scanned
    # from the top: the old framer examined about len(data) ** 2 / 2 octets (2 * 10**9 here).
    assert framer.scanned <= 12 * len(data)
    assert whole.scanned <= 3 * len(data)


def test_many_small_messages_in_one_chunk_cost_linear_work() -> None:
    stream = (TCP_B + b"\r\n\r\n") * 2000
    framer = StreamFramer()
    got = framer.feed(stream, 0.0)
    assert len(got) == 2000 and framer.keepalives == 2000
    assert framer.scanned <= 3 * len(stream)


# -- the size limit: 513 where a response is possible (RFC 3261 section 21.5.14) -----------------


def test_over_the_limit_by_one_octet_gets_513_with_the_request_headers() -> None:
    data = big_request(DEFAULT_MAX_MESSAGE_SIZE + 1)
    for size in (1, 1000, len(data)):
        framer = StreamFramer()
        got = [m for i in range(0, len(data), size) for m in framer.feed(data[i : i + size], 0.0)]
        [error] = got
        assert isinstance(error, ParseError)
        assert error.status == 513
        assert error.headers is not None and error.headers.get("CSeq") == "7 OPTIONS"
        assert framer.broken and "65536" in framer.broken
        assert framer.feed(TCP_B, 0.0) == []


def test_content_length_over_the_limit_gets_513_at_once() -> None:
    framer = StreamFramer(StreamLimits(max_message_size=1000))
    head = big_request(400).replace(b"Content-Length: 0", b"Content-Length: 900")
    [error] = framer.feed(head, 0.0)  # no need to wait for the body
    assert isinstance(error, ParseError) and error.status == 513
    assert error.headers is not None and error.headers.get("Call-ID") == "big@127.0.0.1"


def test_body_up_to_the_limit_is_accepted() -> None:
    body = b"x" * 600
    data = big_request(1000, body)
    framer = StreamFramer(StreamLimits(max_message_size=1000))
    [message] = framer.feed(data, 0.0)
    assert isinstance(message, Request) and message.body == body


def test_endless_header_of_a_response_or_garbage_gets_no_headers() -> None:
    limits = StreamLimits(max_message_size=200)
    for data in (
        b"SIP/2.0 200 OK\r\nCSeq: 1 OPTIONS\r\n" + b"X: y\r\n" * 50,  # a response: never answered
        b"GARBAGE\r\n" + b"x" * 300,  # no request line
        b"OPTIONS sip:a@b SIP/2.0 " + b"x" * 300,  # no complete line at all
    ):
        framer = StreamFramer(limits)
        [error] = framer.feed(data, 0.0)
        assert isinstance(error, ParseError) and error.status == 513
        assert error.headers is None


def test_too_large_error_parses_at_most_the_limit() -> None:
    data = big_request(5000)
    error = too_large_error(data, 1000)
    assert error.status == 513
    assert error.headers is not None and error.headers.get("CSeq") == "7 OPTIONS"
    assert len(error.headers.get_raw("X-Pad")) == 0  # the first pad line ends past octet 1000
    datagram = big_request(900, b"body")  # a whole datagram over a smaller limit
    error = too_large_error(datagram, 800)
    assert error.headers is not None and error.headers.get("Via")


def _endpoint_answer(error: ParseError) -> Response:
    endpoint = Endpoint(allow=["OPTIONS"])
    tcp = Destination("tcp", "127.0.0.1", 40000)
    [send] = endpoint.receive_message(error, tcp, "127.0.0.1", 0.0)
    assert isinstance(send, Send) and send.destination == tcp
    answer = parse_message(send.data)
    assert isinstance(answer, Response)
    return answer


def test_endpoint_answers_the_513() -> None:
    framer = StreamFramer(StreamLimits(max_message_size=1000))
    [error] = framer.feed(big_request(2000), 0.0)
    assert isinstance(error, ParseError)
    answer = _endpoint_answer(error)
    assert answer.status == 513 and answer.reason.startswith("Message Too Large")
    assert answer.headers.get("CSeq") == "7 OPTIONS"


# -- deadlines (virtual time) --------------------------------------------------------------------


def test_first_message_deadline_on_an_accepted_connection() -> None:
    framer = StreamFramer(StreamLimits(first_message_timeout=5.0), now=100.0, accepted=True)
    assert framer.next_deadline() == 105.0
    assert framer.handle_timer(104.9) is None
    framer.feed(b"\r\n\r\n", 104.0)  # pings are no message
    assert framer.next_deadline() == 105.0
    assert framer.handle_timer(105.0) == "no complete message within 5 s of connecting"
    assert framer.broken and framer.next_deadline() is None
    assert framer.feed(TCP_A, 105.1) == []


def test_first_message_deadline_is_met_by_a_complete_message() -> None:
    limits = StreamLimits(first_message_timeout=5.0, message_timeout=None)
    framer = StreamFramer(limits, now=0.0, accepted=True)
    assert len(framer.feed(TCP_A, 4.0)) == 1
    assert framer.next_deadline() is None
    assert framer.handle_timer(1000.0) is None


def test_outbound_connection_has_no_first_message_deadline() -> None:
    framer = StreamFramer(StreamLimits(first_message_timeout=5.0), now=0.0, accepted=False)
    assert framer.next_deadline() is None


def test_slow_drip_of_a_header_is_cut_at_the_message_deadline() -> None:
    limits = StreamLimits(first_message_timeout=None, message_timeout=2.0)
    framer = StreamFramer(limits, now=0.0, accepted=True)
    assert len(framer.feed(TCP_B, 1.0)) == 1
    assert framer.next_deadline() is None  # between messages: only the idle timeout runs
    for i, octet in enumerate(TCP_A[:30]):
        now = 10.0 + i * 0.25
        framer.feed(bytes([octet]), now)
        assert framer.next_deadline() == 12.0  # from the message's first octet, not the last
        if framer.handle_timer(now):
            break
    assert framer.broken == "message not complete within 2 s"
    assert now == 12.0


def test_message_deadline_restarts_with_each_message() -> None:
    limits = StreamLimits(first_message_timeout=None, message_timeout=2.0)
    framer = StreamFramer(limits)
    assert framer.feed(TCP_A + TCP_B[:5], 10.0)
    assert framer.next_deadline() == 12.0  # the second message started at 10.0
    assert framer.feed(TCP_B[5:] + TCP_C[:5], 11.5)
    assert framer.next_deadline() == 13.5


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_message_size"):
        StreamLimits(max_message_size=0)
    with pytest.raises(ValueError, match="message_timeout"):
        StreamLimits(message_timeout=0.0)
    assert NO_DEADLINES.message_timeout is None

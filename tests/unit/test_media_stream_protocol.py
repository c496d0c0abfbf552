"""The Twilio Media Streams core: message shapes (against Twilio's documented examples), parsing
what a bot sends, the playout queue with marks and clear, the bounded queue towards the bot."""

from __future__ import annotations

import base64
import json

import pytest

from siproc.media.media_stream_protocol import (
    BotClear,
    BotMark,
    BotMedia,
    BotMessageError,
    MediaStreamProtocol,
    PlayoutQueue,
    SendQueue,
    StreamFormat,
    parse_stream_arguments,
)

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"

# Messages a bot receives from Twilio, shaped as in Twilio's reference
# (https://www.twilio.com/docs/voice/media-streams/websocket-messages); field values are ours.
TWILIO_CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
TWILIO_START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "siproc",
        "streamSid": SID,
        "callSid": "abc@host",
        "tracks": ["inbound"],
        "customParameters": {"lang": "de", "direction": "inbound"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
    "streamSid": SID,
}
# Messages Twilio accepts from a bot (same reference, "Send messages to Twilio").
BOT_MEDIA = '{"event":"media","streamSid":"SID","media":{"payload":"PAYLOAD"}}'
BOT_MARK = json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "my label"}})
BOT_CLEAR = json.dumps({"event": "clear", "streamSid": SID})


def proto(fmt: StreamFormat = StreamFormat.MULAW_8000) -> MediaStreamProtocol:
    return MediaStreamProtocol(SID, "abc@host", {"lang": "de", "direction": "inbound"}, fmt)


def test_connected_and_start_have_twilios_shape() -> None:
    p = proto()
    assert json.loads(p.connected()) == TWILIO_CONNECTED
    assert json.loads(p.start()) == TWILIO_START


def test_media_counts_chunks_and_timestamps_in_20_ms_steps() -> None:
    p = proto()
    p.start()
    first = json.loads(p.media(b"\xff" * 160))
    second = json.loads(p.media(bytes(range(160))))
    assert first == {
        "event": "media",
        "sequenceNumber": "2",
        "media": {
            "track": "inbound",
            "chunk": "1",
            "timestamp": "0",
            "payload": base64.b64encode(b"\xff" * 160).decode(),
        },
        "streamSid": SID,
    }
    assert (second["sequenceNumber"], second["media"]["chunk"]) == ("3", "2")
    assert second["media"]["timestamp"] == "20"
    assert base64.b64decode(second["media"]["payload"]) == bytes(range(160))


@pytest.mark.parametrize("sid", [SID, 'MZ"%d\\\u00e9'])
def test_media_from_its_template_is_the_json_every_other_message_gets(sid: str) -> None:
    """media is built from a template (50 a second per call): byte for byte what json.dumps
    gives for the same message, whatever the streamSid holds."""
    p = MediaStreamProtocol(sid, "call", {})
    p.start()
    for chunk in range(1, 4):
        payload = bytes(range(chunk, chunk + 160))
        expected = json.dumps(
            {
                "event": "media",
                "sequenceNumber": str(chunk + 1),
                "media": {
                    "track": "inbound",
                    "chunk": str(chunk),
                    "timestamp": str((chunk - 1) * 20),
                    "payload": base64.b64encode(payload).decode(),
                },
                "streamSid": sid,
            },
            separators=(",", ":"),
        )
        assert p.media(payload) == expected
    assert json.loads(p.dtmf("1"))["sequenceNumber"] == "5"  # one count for all messages


def test_dtmf_mark_stop() -> None:
    p = proto()
    assert json.loads(p.dtmf("5")) == {
        "event": "dtmf",
        "sequenceNumber": "1",
        "dtmf": {"track": "inbound_track", "digit": "5"},
        "streamSid": SID,
    }
    assert json.loads(p.mark("my label"))["mark"] == {"name": "my label"}
    stop = json.loads(p.stop())
    assert stop["event"] == "stop" and stop["sequenceNumber"] == "3"
    assert stop["stop"] == {"accountSid": "siproc", "callSid": "abc@host"}


def test_raw_format_sends_binary_media_and_says_so_in_start() -> None:
    p = proto(StreamFormat.L16_16000)
    start = json.loads(p.start())
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/l16",
        "sampleRate": 16000,
        "channels": 1,
    }
    assert p.media(b"\x01\x00" * 320) == b"\x01\x00" * 320
    assert StreamFormat.L16_16000.frame_bytes == 640
    assert p.parse(b"\x00\x01") == BotMedia(b"\x00\x01")


def test_parse_bot_messages() -> None:
    p = proto()
    payload = base64.b64encode(b"\x7f" * 3).decode()
    media = BOT_MEDIA.replace("SID", SID).replace("PAYLOAD", payload)
    assert p.parse(media) == BotMedia(b"\x7f" * 3)
    assert p.parse(BOT_MARK) == BotMark("my label")
    assert p.parse(BOT_CLEAR) == BotClear()
    assert p.parse('{"event":"media","media":{"payload":""}}') == BotMedia(b"")  # no sid: ok
    assert p.parse('{"event":"future-thing"}') is None


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        (json.dumps({"streamSid": SID}), "without an event"),
        ('{"event":"media"}', "without media.payload"),
        ('{"event":"media","media":{"payload":"@@@"}}', "not base64"),
        ('{"event":"mark","mark":{}}', "without mark.name"),
        ('{"event":"mark","mark":{"name":"%s"}}' % ("x" * 300), "longer than"),
        ('{"event":"clear","streamSid":"MZother"}', "is not this stream's"),
        (b"\x00\x01", "binary frame on a mu-law stream"),
    ],
)
def test_parse_refuses_malformed_messages_with_a_reason(message: str | bytes, reason: str) -> None:
    with pytest.raises(BotMessageError, match=reason):
        proto().parse(message)


@pytest.mark.parametrize("opening", ["[", '{"event":"media","media":'], ids=["array", "object"])
def test_parse_refuses_deeply_nested_json(opening: str) -> None:
    """json raises RecursionError, which is no ValueError, for a deep nesting: within the
    1 MiB a bot may send."""
    with pytest.raises(BotMessageError, match=r"^not JSON: nested too deeply$"):
        proto().parse(opening * 100_000)


def test_stream_arguments() -> None:
    url, fmt, params = parse_stream_arguments("wss://bot.example/x?a=1 lang=de id=42")
    assert (url, fmt, params) == (
        "wss://bot.example/x?a=1",
        StreamFormat.MULAW_8000,
        {"lang": "de", "id": "42"},
    )
    assert parse_stream_arguments("ws://h:1/ format=L16/16000")[1] is StreamFormat.L16_16000
    for bad, reason in [
        ("", "missing URL"),
        ("http://h/", "not a ws"),
        ("ws:///path", "not a ws"),
        ("ws://h/ novalue", "name=value"),
        ("ws://h/ 1x=2", "name=value"),
        ("ws://h/ format=opus", "unknown format"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_stream_arguments(bad)


# -- PlayoutQueue ------------------------------------------------------------------------------


def test_playout_cuts_chunks_of_any_size_into_frames() -> None:
    q = PlayoutQueue(4, 100)
    q.push_audio(b"abcdef")
    q.push_audio(b"ghij")
    assert q.pull() == (b"abcd", [])
    assert q.pull() == (b"efgh", [])
    assert q.queued_bytes == 2
    assert q.pull() == (None, [])  # a partial frame waits one tick for more ...
    assert q.pull() == (b"ij\xff\xff", [])  # ... then plays padded with silence
    assert q.pull() == (None, [])
    assert q.queued_bytes == 0


def test_partial_frame_completed_in_time_plays_whole() -> None:
    q = PlayoutQueue(4, 100)
    q.push_audio(b"ab")
    assert q.pull() == (None, [])
    q.push_audio(b"cdef")
    assert q.pull() == (b"abcd", [])


def test_mark_is_reached_when_the_audio_before_it_has_played() -> None:
    q = PlayoutQueue(4, 100)
    q.push_mark("early")  # nothing queued: reached at the next tick
    q.push_audio(b"12345678")
    q.push_mark("after")
    q.push_audio(b"9")
    assert q.pull() == (b"1234", ["early"])
    assert q.pull() == (b"5678", ["after"])
    q.push_mark("end")
    assert q.pull() == (b"9\xff\xff\xff", ["end"])  # followed by a mark: no waiting


def test_clear_drops_audio_and_returns_its_marks() -> None:
    q = PlayoutQueue(4, 100)
    q.push_audio(b"1234" * 10)
    q.push_mark("a")
    q.push_audio(b"5678")
    q.push_mark("b")
    q.pull()
    assert q.clear() == ["a", "b"]
    assert q.pull() == (None, [])
    assert q.queued_bytes == 0 and len(q) == 0


def test_full_when_more_than_max_bytes_are_queued() -> None:
    q = PlayoutQueue(4, 8)
    q.push_audio(b"1234")
    assert not q.full
    q.push_audio(b"5678")
    assert q.full
    q.pull()
    assert not q.full


def test_l16_pads_with_zero_samples() -> None:
    q = PlayoutQueue(4, 8, silence=b"\x00")
    q.push_audio(b"\x01\x02")
    q.push_mark("m")
    assert q.pull() == (b"\x01\x02\x00\x00", ["m"])


# -- SendQueue ---------------------------------------------------------------------------------


def test_send_queue_drops_media_not_control_and_times_the_stall() -> None:
    q = SendQueue(2)
    q.put_control("start")
    assert q.put_media("m1", 0.0) and q.put_media("m2", 0.02)
    assert not q.put_media("m3", 0.04)
    q.put_control("mark")  # never dropped
    assert not q.put_media("m4", 0.06)
    assert q.dropped == 2
    assert not q.stalled(1.0, 2.0)
    assert q.stalled(2.04, 2.0)
    assert [q.get() for _ in range(5)] == ["start", "m1", "m2", "mark", None]
    assert q.dropping_since is None and not q.stalled(10.0, 2.0)
    assert q.sent == 4
    assert q.put_media("m5", 0.1)


def test_marks_between_tiny_chunks_fill_the_queue_too() -> None:
    """A bot alternating 1-byte chunks and 256-character marks stays far under 60 s of audio
    for hundreds of thousands of messages; the queue's bound must hold for them too."""
    q = PlayoutQueue(160, 160 * 3000)  # 60 s of mu-law, as the edge makes it
    pushed = 0
    while not q.full and pushed < 1_000_000:
        q.push_audio(b"\xff")
        q.push_mark("m" * 256)
        pushed += 1
    assert q.full
    assert len(q) <= 2 * 3000


def test_send_queue_says_when_control_messages_back_up() -> None:
    """Control messages are never dropped; past ``max_control`` waiting the edge stops reading
    the bot (whose marks and clears they echo) until the bot reads."""
    q = SendQueue(2, max_control=3)
    assert q.put_media("m1", 0.0)
    for name in ("a", "b"):
        q.put_control(name)
    assert not q.backlogged
    q.put_control("c")
    assert q.backlogged
    assert q.get() == "m1" and q.backlogged  # media leaving changes nothing
    assert q.get() == "a" and not q.backlogged

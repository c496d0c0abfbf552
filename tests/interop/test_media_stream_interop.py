"""STREAM with baresip as the caller (issue 10, item 1 acceptance; DESIGN.md 4.5).

baresip calls siproc straight on 127.0.0.1 and plays a 440 Hz tone from a WAV (it hangs up when
the file ends); siproc's handler answers and runs ``STREAM <url> lang=de`` to a bot in the test
(tests/ws_bot.py, a ``websockets`` server). baresip records what it hears (``dump-*-dec.wav``).

* mu-law over ``ws://``: the bot gets ``connected``, ``start`` (with ``lang``), then ~50
  ``media`` frames a second holding the tone, and baresip's ``sndcode`` keys as ``dtmf`` in
  order. It sends 1 s of 1000 Hz and a mark (echoed once that second has played: baresip heard
  all of it), then 3 s of 1500 Hz and a mark, and a ``clear`` 0.5 s later. The clear is timed
  in the recording (see :func:`test_stream_to_a_bot_with_baresip_calling`).
* ``format=l16/16000`` end to end, and ``STREAM STOP`` from the handler while the call goes on.
* ``wss://`` with a test CA (``SIPROC_TLS_CA_FILE``), and the same bot untrusted without it.
* mu-law on a G.722 call: resampled both ways, marks on time.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.audio import make_tone, read_mono
from tests.peers import Baresip
from tests.siproc_proc import Siproc, handler_dir, wait_file
from tests.tls_certs import make_pki
from tests.ws_bot import BotServer, BotSession, goertzel_share, ulaw_tone

MakeBaresip = Callable[..., Baresip]
MakeSiproc = Callable[..., Siproc]
ENDED = r"^(SIGTERM|EOF)$"

# LOGFILE URL STOP_AFTER [PARAMS...]: answers; logs "EVENT <line>" for every event; on
# CONNECTED: STREAM URL lang=de PARAMS; STOP_AFTER seconds (unless "-") after STREAM CONNECTED:
# STREAM STOP.
HANDLER = r"""
log=$1; url=$2; stop_after=$3; shift 3
on_term() {
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}
trap on_term TERM
echo ANSWER
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$line" in
    CONNECTED) echo "STREAM $url lang=de $*" ;;
    "STREAM CONNECTED "*)
      [ "$stop_after" != - ] && (sleep "$stop_after"; echo "STREAM STOP") & ;;
  esac
done
echo EOF >> "$log"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return handler_dir(tmp_path / "siproc", HANDLER)


@pytest.fixture
def bots() -> Iterator[Callable[..., BotServer]]:
    started: list[BotServer] = []

    def start(*args: object, **kwargs: object) -> BotServer:
        bot = BotServer(*args, **kwargs)  # type: ignore[arg-type]
        started.append(bot)
        return bot

    yield start
    for bot in started:
        bot.close()


def events(path: Path) -> list[str]:
    return [line[6:] for line in path.read_text().splitlines() if line.startswith("EVENT ")]


def sounding(samples: np.ndarray, rate: int, floor: float = 0.02) -> list[tuple[float, float]]:  # type: ignore[type-arg]
    """(start, end) in seconds of the stretches of ``samples`` that are not silent, split where
    it is silent for more than 10 ms (siproc sends digital silence when nothing plays)."""
    loud = np.flatnonzero(np.abs(samples) > floor)
    if not loud.size:
        return []
    breaks = np.flatnonzero(np.diff(loud) > rate // 100)
    starts = np.r_[loud[0], loud[breaks + 1]]
    ends = np.r_[loud[breaks], loud[-1]] + 1
    return [(int(s) / rate, int(e) / rate) for s, e in zip(starts, ends, strict=True)]


def tone_blocks(pcm: np.ndarray, freq: float, rate: int = 8000) -> float:  # type: ignore[type-arg]
    """The share of the 20 ms frames of ``pcm`` that are ``freq``, each measured on its own.
    A single DFT over a longer stretch would be spoilt by a phase jump: the media worker
    starts with the call and finds ~0.3 s of the caller's packets queued, and the jitter buffer
    trims that delay by dropping a frame every 0.5 s (media/jitter.py, TRIM_WINDOW)."""
    block = rate // 50
    starts = range(0, len(pcm) - block + 1, block)
    shares = [goertzel_share(pcm[i : i + block], freq, rate) for i in starts]
    return sum(share > 0.9 for share in shares) / len(shares)


def the_tone(samples: np.ndarray, rate: int, freq: float) -> tuple[float, float]:  # type: ignore[type-arg]
    """The one sounding stretch of the recording that is ``freq``."""
    found = [
        (start, end)
        for start, end in sounding(samples, rate)
        if end - start > 0.05
        and goertzel_share(samples[int(start * rate) : int(end * rate)], freq, rate) > 0.8
    ]
    assert len(found) == 1, (freq, sounding(samples, rate))
    return found[0]


async def tones_mark_and_clear(s: BotSession) -> None:
    """0.5 s into the stream: 1 s of 1000 Hz and the mark "tone-done"; 0.2 s after it comes
    back (a silent gap in the recording), 3 s of 1500 Hz and the mark "cleared", then ``clear``
    0.5 s later."""
    await s.wait("media", 25)
    s.notes["tone"] = time.monotonic()
    await s.send_audio(ulaw_tone(1000, 1.0))
    await s.send("mark", mark={"name": "tone-done"})
    await s.wait("mark", 1)
    await asyncio.sleep(0.2)
    s.notes["second"] = time.monotonic()
    await s.send_audio(ulaw_tone(1500, 3.0))
    await s.send("mark", mark={"name": "cleared"})
    await asyncio.sleep(0.5)
    s.notes["clear"] = time.monotonic()
    await s.send("clear")


def test_stream_to_a_bot_with_baresip_calling(
    workdir: Path,
    make_baresip: MakeBaresip,
    make_siproc: MakeSiproc,
    bots: Callable[..., BotServer],
) -> None:
    """The acceptance test. How the clear is timed: a mark is echoed in the media tick that
    takes the last frame before it from the bot's queue, and that tick sends that frame
    (RtpStream.tick mixes and sends in one go), so the arrival of "tone-done" at the bot marks
    the end of the 1000 Hz tone on the wire; "cleared" is echoed by the clear itself, so its
    arrival marks the moment the clear was processed. Both echoes take the same path to the
    bot, which timestamps them on one clock. baresip's recording holds both tone ends on its
    own timeline (it hears a continuous stream: siproc sends silence between the tones), so
    the clear's moment in the recording is ``end of 1000 Hz + (cleared - tone-done)``, and the
    1500 Hz tone must end within 40 ms of it. The allowance of one packet (20 ms) on top is
    for baresip's adaptive jitter buffer, which may drop or repeat one 20 ms frame between the
    two tone ends and so shift the recording's timeline against the wall clock by a packet."""
    bot = bots(tones_mark_and_clear)
    siproc = make_siproc("bob.log", bot.url, "-")
    caller_tone = make_tone(workdir.parent / "a440.wav", 440.0, 6.0)
    alice = make_baresip("alice", audio_source=caller_tone, record=True)
    alice.dial(siproc.uri("bob"))
    alice.wait_event("CALL_ESTABLISHED", timeout=10)
    wait_file(workdir / "bob.log", r"^EVENT STREAM CONNECTED MZ", timeout=10)
    assert bot.sessions
    s = bot.sessions[0]
    deadline = time.monotonic() + 10
    while len(s.events("media")) < 75 and time.monotonic() < deadline:
        time.sleep(0.05)
    alice.send_dtmf("159#")
    alice.wait_event("CALL_CLOSED", timeout=15)  # the caller's WAV ended
    wait_file(workdir / "bob.log", ENDED, timeout=10)
    assert s.closed.wait(5)

    bob_events = events(workdir / "bob.log")
    sid = next(e.split()[2] for e in bob_events if e.startswith("STREAM CONNECTED "))
    assert not [e for e in bob_events if e.startswith(("ERROR", "STREAM STOPPED"))], bob_events
    assert bob_events[-1].startswith("DISCONNECTED 200"), bob_events

    kinds = [m["event"] for _, m in s.messages]
    assert kinds[:2] == ["connected", "start"] and kinds[-1] == "stop", kinds[:3]
    start = s.events("start")[0]["start"]
    assert start["streamSid"] == sid
    assert start["customParameters"]["lang"] == "de"
    assert start["customParameters"]["direction"] == "inbound"
    assert start["customParameters"]["remoteUri"] == alice.aor
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}

    times = s.times("media")
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 48 < rate < 52, rate
    assert len(times) == pytest.approx(50 * (times[-1] - times[0]), abs=3)
    chunks = [int(m["media"]["chunk"]) for m in s.events("media")]
    assert chunks == list(range(1, len(chunks) + 1))
    heard = s.inbound_pcm()
    # the caller's tone: after setup and before the keys (which replace its audio for a while),
    # and after them
    assert tone_blocks(heard[4000:11200], 440) == 1.0
    assert tone_blocks(heard[8000 * 4 : 8000 * 5], 440) == 1.0

    assert [m["dtmf"]["digit"] for m in s.events("dtmf")] == ["1", "5", "9", "#"]

    assert [m["mark"]["name"] for m in s.events("mark")] == ["tone-done", "cleared"]
    t_done = s.message_time("mark", name="tone-done")
    t_cleared = s.message_time("mark", name="cleared")
    assert 0.98 < t_done - s.notes["tone"] < 1.3, t_done - s.notes["tone"]  # after its 1 s
    assert t_cleared - s.notes["clear"] < 0.05  # a clear echoes the marks it drops at once

    [recording] = alice.recordings("dec")
    samples, srate = read_mono(recording)
    start_1000, end_1000 = the_tone(samples, srate, 1000)
    start_1500, end_1500 = the_tone(samples, srate, 1500)
    assert end_1000 - start_1000 == pytest.approx(1.0, abs=0.025)  # all of it, nothing more
    clear_at = end_1000 + (t_cleared - t_done)  # the clear, on the recording's timeline
    late = end_1500 - clear_at
    print(
        f"1500 Hz heard for {end_1500 - start_1500:.3f} s; it ended {late * 1000:+.1f} ms "
        f"after the clear was processed"
    )
    assert late < 0.040 + 0.020, late
    # and it really played until the clear: it cannot end more than a tick before it
    assert late > -0.020 - 0.020, late


async def l16_tone_back(s: BotSession) -> None:
    """0.5 s into the stream: 1 s of 2000 Hz as binary L16 at 16 kHz, in 100 ms frames, and a
    mark."""
    await s.wait("binary", 25)
    t = np.arange(16000) / 16000
    pcm = (0.4 * 32767 * np.sin(2 * np.pi * 2000 * t)).astype("<i2").tobytes()
    s.notes["tone"] = time.monotonic()
    for i in range(0, len(pcm), 3200):
        await s.ws.send(pcm[i : i + 3200])
    await s.send("mark", mark={"name": "l16-done"})


def test_l16_stream_and_stream_stop_while_the_call_goes_on(
    workdir: Path,
    make_baresip: MakeBaresip,
    make_siproc: MakeSiproc,
    bots: Callable[..., BotServer],
) -> None:
    """``format=l16/16000``: 640-byte binary frames at 50 a second hold the caller's 440 Hz
    (resampled from the call's 8 kHz); 2000 Hz sent back as binary L16 is heard by baresip for
    its whole second, and the mark after it comes back when it has played. ``STREAM STOP``
    3 s in: ``stop`` reaches the bot last, the handler hears ``STREAM STOPPED handler``, and
    the call runs on until baresip's file ends."""
    bot = bots(l16_tone_back)
    siproc = make_siproc("bob.log", bot.url, "3", "format=l16/16000")
    caller_tone = make_tone(workdir.parent / "a440.wav", 440.0, 6.0)
    alice = make_baresip("alice", audio_source=caller_tone, record=True)
    alice.dial(siproc.uri("bob"))
    established = time.monotonic()
    alice.wait_event("CALL_ESTABLISHED", timeout=10)
    wait_file(workdir / "bob.log", r"^EVENT STREAM STOPPED handler$", timeout=10)
    stopped = time.monotonic()
    assert bot.sessions and bot.sessions[0].closed.wait(5)
    alice.wait_event("CALL_CLOSED", timeout=10)
    assert time.monotonic() - established > 5.5  # the caller's 6 s file played to its end
    assert stopped - established < 4.5
    wait_file(workdir / "bob.log", ENDED, timeout=10)
    bob_events = events(workdir / "bob.log")
    assert not [e for e in bob_events if e.startswith("ERROR")], bob_events
    assert bob_events.index("STREAM STOPPED handler") < len(bob_events) - 1
    assert bob_events[-1].startswith("DISCONNECTED 200"), bob_events
    siproc.wait_for(r"call ended: 200 remote hangup")

    s = bot.sessions[0]
    assert [m["event"] for _, m in s.messages] == ["connected", "start", "mark", "stop"]
    played = s.message_time("mark", name="l16-done") - s.notes["tone"]
    assert 0.98 < played < 1.3, played  # after all of its second, resampled to 8 kHz
    start = s.events("start")[0]["start"]
    assert start["mediaFormat"] == {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}
    assert "format" not in start["customParameters"]
    assert start["customParameters"]["lang"] == "de"
    sizes = {len(data) for _, data in s.binary}
    assert sizes == {640}, sizes
    times = [t for t, _ in s.binary]
    assert 48 < (len(times) - 1) / (times[-1] - times[0]) < 52
    assert s.times("stop")[0] >= times[-1]  # nothing after stop
    assert times[-1] - times[0] == pytest.approx(3.0, abs=0.3)  # until the STREAM STOP
    pcm = s.l16_pcm()
    assert tone_blocks(pcm[16000:-1600], 440, 16000) == 1.0

    [recording] = alice.recordings("dec")
    samples, srate = read_mono(recording)
    start_2000, end_2000 = the_tone(samples, srate, 2000)
    assert end_2000 - start_2000 == pytest.approx(1.0, abs=0.025)
    assert len(samples) / srate > 5.0  # the recording (and the call) went on after the stop


async def tone_back(s: BotSession) -> None:
    await s.wait("media", 10)
    await s.send_audio(ulaw_tone(1000, 1.0))


def test_wss_bot_with_a_test_ca(
    workdir: Path,
    make_baresip: MakeBaresip,
    make_siproc: MakeSiproc,
    bots: Callable[..., BotServer],
) -> None:
    """A ``wss://`` bot whose certificate chains to SIPROC_TLS_CA_FILE: the stream runs both
    ways over TLS. The same bot for a siproc that trusts another CA: ``ERROR STREAM TLS: the
    bot's certificate is not trusted``, and that call goes on."""
    pki = make_pki(workdir.parent / "pki")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert, pki.key)
    bot = bots(tone_back, ssl_context=context)
    assert bot.url.startswith("wss://127.0.0.1:")
    trusting = make_siproc("bob.log", bot.url, "-", env={"SIPROC_TLS_CA_FILE": str(pki.ca)})
    doubting = make_siproc("carol.log", bot.url, "-", env={"SIPROC_TLS_CA_FILE": str(pki.other_ca)})
    caller_tone = make_tone(workdir.parent / "a440.wav", 440.0, 3.0)
    alice = make_baresip("alice", audio_source=caller_tone, record=True)
    alice.dial(trusting.uri("bob"))
    alice.wait_event("CALL_CLOSED", timeout=15)
    dave = make_baresip("dave", audio_source=caller_tone)
    dave.dial(doubting.uri("carol"))
    wait_file(workdir / "carol.log", r"^EVENT ERROR STREAM", timeout=10)
    dave.wait_event("CALL_CLOSED", timeout=15)
    wait_file(workdir / "bob.log", ENDED, timeout=10)
    wait_file(workdir / "carol.log", ENDED, timeout=10)

    bob_events = events(workdir / "bob.log")
    assert any(e.startswith("STREAM CONNECTED MZ") for e in bob_events), bob_events
    assert not [e for e in bob_events if e.startswith("ERROR")], bob_events
    [s] = bot.sessions
    assert s.closed.wait(5)
    assert [m["event"] for _, m in s.messages][:2] == ["connected", "start"]
    assert len(s.events("media")) > 80
    assert tone_blocks(s.inbound_pcm()[8000:16000], 440) == 1.0
    [recording] = alice.recordings("dec")
    samples, srate = read_mono(recording)
    start_1000, end_1000 = the_tone(samples, srate, 1000)
    assert end_1000 - start_1000 == pytest.approx(1.0, abs=0.025)

    carol_events = events(workdir / "carol.log")
    errors = [e for e in carol_events if e.startswith("ERROR")]
    assert len(errors) == 1 and errors[0].startswith(
        "ERROR STREAM TLS: the bot's certificate is not trusted"
    ), carol_events
    assert carol_events[-1].startswith("DISCONNECTED 200"), carol_events  # dave hung up
    doubting.wait_for(r"call ended: 200 remote hangup")


async def tone_and_mark(s: BotSession) -> None:
    await s.wait("media", 25)
    s.notes["tone"] = time.monotonic()
    await s.send_audio(ulaw_tone(1000, 1.0))
    await s.send("mark", mark={"name": "done"})


def test_mulaw_stream_on_a_g722_call(
    workdir: Path,
    make_baresip: MakeBaresip,
    make_siproc: MakeSiproc,
    bots: Callable[..., BotServer],
) -> None:
    """A G.722 call (16 kHz) streams 8 kHz mu-law both ways: the bot hears the caller's tone
    (resampled down), baresip hears all of the bot's second of 1000 Hz (resampled up), and the
    mark after it comes back when it has played."""
    bot = bots(tone_and_mark)
    siproc = make_siproc("bob.log", bot.url, "-", env={"SIPROC_CODEC_PRIORITIES": "G722:255"})
    caller_tone = make_tone(workdir.parent / "a440-16k.wav", 440.0, 4.0, rate=16000)
    alice = make_baresip("alice", audio_source=caller_tone, record=True, codecs=("G722",))
    alice.dial(siproc.uri("bob"))
    alice.wait_event("CALL_CLOSED", timeout=15)
    wait_file(workdir / "bob.log", ENDED, timeout=10)
    assert not [e for e in events(workdir / "bob.log") if e.startswith("ERROR")]
    assert "Set audio decoder: G722 16000Hz" in alice.log()

    [s] = bot.sessions
    assert s.closed.wait(5)
    times = s.times("media")
    assert 48 < (len(times) - 1) / (times[-1] - times[0]) < 52
    assert tone_blocks(s.inbound_pcm()[4000:-4000], 440) > 0.95
    played = s.message_time("mark", name="done") - s.notes["tone"]
    assert 0.98 < played < 1.3, played

    [recording] = alice.recordings("dec")
    samples, srate = read_mono(recording)
    assert srate == 16000
    start_1000, end_1000 = the_tone(samples, srate, 1000)
    assert end_1000 - start_1000 == pytest.approx(1.0, abs=0.025)

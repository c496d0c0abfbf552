"""STREAM between two real siproc processes on loopback and a WebSocket bot in the test
(tests/ws_bot.py): alice plays a 440 Hz tone to bob, whose handler puts the call on the bot.
The bot hears the tone in ~50 media frames a second, gets alice's keys as dtmf messages in
order, sends back a 1000 Hz tone and a mark (echoed once played) and then 1500 Hz that a
clear cuts short; alice's recording holds both, the second only until the clear. A bot that
stops reading and a URL that refuses give ERROR STREAM while the call goes on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.audio import make_tone
from tests.siproc_proc import Siproc, wait_file, write_handler
from tests.ws_bot import BotServer, BotSession, free_refused_port, goertzel_share, ulaw_tone

ENDED = r"^(SIGTERM|EOF)$"

# ROLE MODE [URL]: logs every event to ROLE.log.
#   caller  on CONNECTED: RECORD ROLE.wav stereo (left: what it hears), PLAY a440.wav,
#           "DTMF 123" 1.5 s later; HANGUP on STOPPED (the tone lasts 5 s)
#   stream  ANSWER; on CONNECTED: STREAM URL lang=de, and a second STREAM (refused)
HANDLER = r"""
role=$1; mode=$2; url=$3
log="$role.log"
on_term() {
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}
trap on_term TERM
[ "$mode" = caller ] || echo ANSWER
while read -r line; do
  echo "EVENT $line" >> "$log"
  case "$mode:$line" in
    caller:CONNECTED)
      echo "RECORD $role.wav stereo"; echo "PLAY a440.wav"; (sleep 1.5; echo "DTMF 123") & ;;
    caller:STOPPED*) echo HANGUP ;;
    stream:CONNECTED) echo "STREAM $url lang=de"; echo "STREAM $url" ;;
  esac
done
echo EOF >> "$log"
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_handler(tmp_path / "h.sh", HANDLER)
    make_tone(tmp_path / "a440.wav", 440.0, 5.0)
    return tmp_path


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


async def talk_back(s: BotSession) -> None:
    """After 0.5 s of the call: 1 s of 1000 Hz and a mark; when it comes back, 3 s of 1500 Hz
    and a mark, cleared 0.5 s later."""
    await s.wait("media", 25)
    s.notes["tone"] = time.monotonic()
    await s.send_audio(ulaw_tone(1000, 1.0))
    await s.send("mark", mark={"name": "tone-done"})
    await s.wait("mark", 1)
    s.notes["second"] = time.monotonic()
    await s.send_audio(ulaw_tone(1500, 3.0))
    await s.send("mark", mark={"name": "cleared"})
    await asyncio.sleep(0.5)
    s.notes["clear"] = time.monotonic()
    await s.send("clear")


def tone_blocks(path: Path, freq: float) -> int:
    """20 ms blocks of what the recording heard (left) in which ``freq`` holds most of the
    energy."""
    data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    data = data[:, 0]
    block = rate // 50
    count = 0
    for i in range(0, len(data) - block, block):
        chunk = data[i : i + block]
        if np.sqrt(np.mean(chunk**2)) > 0.05 and goertzel_share(chunk, freq, rate) > 0.5:
            count += 1
    return count


@pytest.mark.parametrize("media_workers", ["2", "0"])  # the WebSocket in a worker, or in siproc
def test_stream_both_ways_with_dtmf_marks_and_clear(
    workdir: Path,
    phones: Callable[..., Siproc],
    bots: Callable[..., BotServer],
    media_workers: str,
) -> None:
    bot = bots(talk_back)
    env = {
        "SIPROC_MEDIA_WORKERS": media_workers,
        "SIPROC_MEDIA_IDLE": "0",  # with workers: the call's media runs in one
        "SIPROC_CODEC_PRIORITIES": "PCMU:200",
    }
    bob = phones("bob", "stream", bot.url, env=env)
    alice = phones("alice", "caller", env=env)
    alice.call(bob.uri("bob"))
    wait_file(workdir / "bob.log", ENDED, timeout=20)
    bob_events = events(workdir / "bob.log")
    assert bob_events[0] == "CONNECTED"
    connected = [e for e in bob_events if e.startswith("STREAM CONNECTED MZ")]
    assert len(connected) == 1, bob_events
    sid = connected[0].split()[2]
    assert f"ERROR STREAM a stream is running ({sid})" in bob_events
    assert sum(e.startswith("ERROR") for e in bob_events) == 1, bob_events
    assert bob_events[-1].startswith("DISCONNECTED 200")

    assert bot.sessions and bot.sessions[0].closed.wait(5)
    s = bot.sessions[0]
    kinds = [m["event"] for _, m in s.messages]
    assert kinds[:2] == ["connected", "start"] and kinds[-1] == "stop", kinds[:3]
    start = s.events("start")[0]
    assert start["streamSid"] == sid and start["start"]["streamSid"] == sid
    assert start["start"]["tracks"] == ["inbound"]
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    params = start["start"]["customParameters"]
    assert params["lang"] == "de" and params["direction"] == "inbound"
    assert params["remoteUri"].startswith("sip:") and "127.0.0.1" in params["remoteUri"]

    media = s.events("media")
    chunks = [int(m["media"]["chunk"]) for m in media]
    assert chunks == list(range(1, len(media) + 1))
    assert [int(m["media"]["timestamp"]) for m in media] == [20 * (c - 1) for c in chunks]
    times = s.times("media")
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 45 < rate < 55, rate
    pcm = s.inbound_pcm()
    assert goertzel_share(pcm[8000:-8000], 440) > 0.8  # the caller's tone, after setup

    assert [m["dtmf"]["digit"] for m in s.events("dtmf")] == ["1", "2", "3"]
    assert {m["dtmf"]["track"] for m in s.events("dtmf")} == {"inbound_track"}

    marks = s.events("mark")
    mark_times = s.times("mark")
    assert [m["mark"]["name"] for m in marks] == ["tone-done", "cleared"]
    played = mark_times[0] - s.notes["tone"]
    assert 0.9 < played < 1.5, played  # echoed when its 1 s of audio had played
    assert mark_times[1] - s.notes["clear"] < 0.1  # clear echoes the marks at once

    rec = workdir / "alice.wav"
    assert tone_blocks(rec, 1000) == pytest.approx(50, abs=6)  # all of the 1 s tone
    heard = tone_blocks(rec, 1500) / 50  # 3 s queued, cleared after about 0.5 s
    expected = s.notes["clear"] - s.notes["second"]
    assert heard == pytest.approx(expected, abs=0.1), (heard, expected)


def test_refused_url_and_stalled_bot_are_errors_and_the_calls_go_on(
    workdir: Path, phones: Callable[..., Siproc], bots: Callable[..., BotServer]
) -> None:
    """Two concurrent calls to bob: one streams to a port that refuses, the other to a bot
    that never reads. Both handlers hear ERROR STREAM; both calls keep their RTP to the end,
    without a lost packet."""
    make_tone(workdir / "a440.wav", 440.0, 10.0)  # long enough for buffers to fill
    stalled = bots(read=False)
    refused = f"ws://127.0.0.1:{free_refused_port()}/"
    env = {"SIPROC_MEDIA_WORKERS": "1", "SIPROC_MEDIA_IDLE": "0"}
    bob1 = phones("bob1", "stream", refused, env=env)
    bob2 = phones("bob2", "stream", stalled.url, env=env)
    alice = phones("alice", "caller", env=env)
    alice.call(bob1.uri("bob"))
    alice.call(bob2.uri("bob"))
    wait_file(workdir / "bob1.log", r"ERROR STREAM connection refused", timeout=10)
    text = wait_file(workdir / "bob2.log", r"ERROR STREAM the bot is not reading", timeout=20)
    assert "STREAM CONNECTED MZ" in text
    for log in ("bob1.log", "bob2.log"):
        wait_file(workdir / log, ENDED, timeout=20)
        assert events(workdir / log)[-1].startswith("DISCONNECTED 200")  # alice hung up
    bob2.wait_for(r"stream MZ\w+ to .* ended \(the bot is not reading .*\): \d+ frames to the bot")
    for bob in (bob1, bob2):  # the calls had their audio to the end: RTP flowed both ways
        match = bob.wait_for(r"call ended: 200 .*RTP: (\d+) packets sent, (\d+) received\) (.*)")
        assert int(match.group(2)) > 450, match.group(0)  # 10 s of alice's tone
        assert match.group(3).startswith("lost 0 "), match.group(0)  # no gap

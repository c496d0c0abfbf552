"""CPU cost of RECORD per media tick (issue 3, item 4): prints figures, is not a timed test.

    python bench/record_tick.py [--seconds 60]

For each codec and mode (mono / stereo; WAV, FLAC, Ogg Vorbis) it records ``--seconds`` of a
call: every tick one received RTP packet goes through ``CallRecording.push`` (jitter buffer) and
``CallRecording.tick`` (pop, decode, concealment, copy into the block, a file write every 0.5 s).
Reported: microseconds per tick (mean over the run, file writes amortised; p50; p99, which on a
shared machine is mostly scheduling noise) and the median cost of the ticks that write a block.
Then the same for a real ``RtpStream.tick`` on loopback with and without a recording, so the
difference is what RECORD adds to the media tick.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from siproc.media.codecs import get_codec
from siproc.media.recorder import CallRecording
from siproc.media.rtp import RtpSender
from siproc.net.clock import MediaClock
from siproc.net.rtp_socket import RtpStream


def tone_frames(rate: int, count: int, freq: float = 440.0) -> list[np.ndarray]:  # type: ignore[type-arg]
    n = rate // 50
    t = np.arange(n * count) / rate
    pcm = np.round(0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    return [pcm[i * n : (i + 1) * n] for i in range(count)]


def bench_pipeline(codec_name: str, name: str, stereo: bool, ticks: int, tmp: Path) -> None:
    codec = get_codec(codec_name)
    frame_ts = codec.clock_rate // 50
    frames = tone_frames(codec.sample_rate, 50)
    payloads = [get_codec(codec_name).encode(f) for f in frames]
    recording = CallRecording.open(str(tmp / name), codec.sample_rate, stereo, frame_ts)
    costs = np.empty(ticks)
    clock = time.perf_counter
    for i in range(ticks):
        start = clock()
        recording.push(i & 0xFFFF, (i * frame_ts) & 0xFFFFFFFF, 1234, payloads[i % 50])
        recording.tick(frames[i % 50], codec, frame_ts)
        costs[i] = clock() - start
    start = clock()
    recording.close()
    close = clock() - start
    block = recording.recorder.block_frames
    writes = costs[block - 1 :: block]  # the ticks that wrote a block to the file
    print(
        f"  {codec_name:5} {name:9} {'stereo' if stereo else 'mono':6}  "
        f"mean {costs.mean() * 1e6:5.1f} us/tick  p50 {np.median(costs) * 1e6:5.1f}  "
        f"p99 {np.percentile(costs, 99) * 1e6:6.1f}  block-write tick p50 "
        f"{np.median(writes) * 1e6:6.1f} us  close {close * 1e3:.2f} ms"
    )


async def bench_stream(ticks: int, tmp: Path) -> None:
    loop = asyncio.get_running_loop()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    stream = RtpStream.open(loop, MediaClock(loop), "127.0.0.1", (40000, 49999), random.Random(1))
    codec = get_codec("PCMU")
    stream.configure(peer.getsockname(), codec, 0, None, "sendrecv")
    sender = RtpSender(0, random.Random(2))
    packets = [sender.packet(codec.encode(f), 160) for f in tone_frames(8000, ticks)]
    source = peer.getsockname()
    tone = tmp / "tone.wav"
    import soundfile

    soundfile.write(str(tone), np.concatenate(tone_frames(8000, ticks)), 8000, subtype="PCM_16")

    def run(label: str) -> float:
        stream.play(str(tone))
        total = 0.0
        for i in range(ticks):
            start = time.perf_counter()
            stream.datagram_received(memoryview(packets[i]), source)
            stream.tick(i * 0.02)
            total += time.perf_counter() - start
            if i % 64 == 0:  # keep the peer's socket buffer from filling
                try:
                    while True:
                        peer.recv(2048)
                except BlockingIOError:
                    pass
        stream.stop_last()
        per_tick = total / ticks * 1e6
        print(f"  RtpStream receive + tick, PCMU, {label:22} {per_tick:6.1f} us/tick")
        return per_tick

    try:
        plain = run("playing, not recording")
        stream.start_recording(str(tmp / "stream.wav"))
        recording = run("playing and recording")
        stream.stop_recording()
        print(f"  RECORD adds {recording - plain:.1f} us per tick to the stream")
    finally:
        stream.close()
        peer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="recorded per case")
    args = parser.parse_args()
    ticks = round(args.seconds * 50)
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        print(f"CallRecording push + tick, {args.seconds:g} s of call per case:")
        for codec_name in ("PCMU", "G722", "opus"):
            for stereo in (False, True):
                bench_pipeline(codec_name, "rec.wav", stereo, ticks, tmp)
        bench_pipeline("PCMU", "rec.flac", False, ticks, tmp)
        bench_pipeline("PCMU", "rec.ogg", False, ticks, tmp)
        print("RtpStream (loopback sockets, ticks driven directly):")
        asyncio.run(bench_stream(ticks, tmp))


if __name__ == "__main__":
    main()

"""Print the CPU time one 20 ms frame costs in each codec: encode, decode, encode of silence.

    python bench/codecs.py [--frames 2000]

The input is a speech-like signal (a 300 Hz tone, amplitude-modulated at 3 Hz, plus noise) at
the codec's sample rate. Figures are CPU microseconds per frame of this process (one core), and
the share of one core that a call's media (encode + decode, 50 frames a second) takes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import numpy.typing as npt

from siproc.media.codecs import AudioCodec, get_codec


def speech_like(rate: int, samples: int) -> npt.NDArray[np.int16]:
    rng = np.random.default_rng(1)
    t = np.arange(samples) / rate
    signal = 6000 * np.sin(2 * np.pi * 300 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return np.clip(signal + rng.normal(0, 500, samples), -32768, 32767).astype(np.int16)


def per_frame(codec: AudioCodec, frames: int) -> tuple[float, float, float]:
    size = codec.frame_samples(20)
    pcm = speech_like(codec.sample_rate, size * frames).reshape(frames, size)
    for frame in pcm[:50]:  # warm up
        codec.decode(codec.encode(frame))
    start = time.process_time()
    payloads = [codec.encode(frame) for frame in pcm]
    encoded = time.process_time()
    for payload in payloads:
        codec.decode(payload)
    decoded = time.process_time()
    zeros = np.zeros(size, dtype=np.int16)
    for _ in range(frames):
        codec.encode(zeros)
    silent = time.process_time()
    scale = 1e6 / frames
    return (encoded - start) * scale, (decoded - encoded) * scale, (silent - decoded) * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames per measurement")
    frames = parser.parse_args().frames
    print(f"{'codec':<6} {'encode us':>10} {'decode us':>10} {'silence us':>11} {'core/call':>10}")
    for name in ("PCMU", "PCMA", "G722", "opus"):
        encode, decode, silence = per_frame(get_codec(name), frames)
        share = (encode + decode) * 50 / 1e6
        print(f"{name:<6} {encode:>10.1f} {decode:>10.1f} {silence:>11.1f} {share:>10.2%}")


if __name__ == "__main__":
    main()

"""G.722 (siproc.media.codecs.g722): round trips, framing, state, RTP clock, a missing package."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from siproc.cli import parameters_main
from siproc.media.codecs import CodecUnavailableError, G722Codec, get_codec
from siproc.media.codecs import g722 as g722_module
from siproc.media.codecs.catalog import apply_priorities, codec_availability, enabled_codecs
from siproc.net.clock import MediaClock
from siproc.net.rtp_socket import RtpStream
from tests.rtp_peer import receive_rtp

RATE = 16000
FRAME = 320  # 20 ms at 16 kHz
Int16Array = npt.NDArray[np.int16]


def tone(freq: float, frames: int, amplitude: float = 10000.0, rate: int = RATE) -> Int16Array:
    t = np.arange(frames * FRAME) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def sine_fit(pcm: npt.NDArray[np.generic], freq: float, rate: int) -> tuple[float, float]:
    """(SNR in dB, amplitude) of the best sine of ``freq`` through ``pcm``: independent of the
    codec's delay, and the residual is everything the codec added (noise, distortion)."""
    t = np.arange(pcm.size) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t), np.ones_like(t)])
    coef, *_ = np.linalg.lstsq(basis.T, pcm.astype(np.float64), rcond=None)
    fit = coef @ basis
    residual = pcm - fit
    return float(10 * np.log10(np.sum(fit**2) / np.sum(residual**2))), float(np.hypot(*coef[:2]))


def peak_frequency(pcm: npt.NDArray[np.generic], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
    return float(np.fft.rfftfreq(pcm.size, 1 / rate)[np.argmax(spectrum)])


def round_trip(codec: G722Codec, pcm: Int16Array) -> tuple[list[bytes], Int16Array]:
    payloads = [codec.encode(frame) for frame in pcm.reshape(-1, FRAME)]
    return payloads, np.concatenate([codec.decode(p) for p in payloads])


# -- the codec ------------------------------------------------------------------------------------


def test_interface() -> None:
    codec = get_codec("g722")
    assert isinstance(codec, G722Codec)
    assert (codec.name, codec.payload_type, codec.sample_rate, codec.clock_rate) == (
        "G722",
        9,
        16000,
        8000,  # RFC 3551 section 4.5.2
    )
    assert codec.stateful
    assert codec.frame_samples(20) == 320
    assert codec.frame_samples(30) == 480
    with pytest.raises(ValueError):
        codec.frame_samples(0)
    with pytest.raises(ValueError, match=r"not G\.722"):
        G722Codec("PCMU")


@pytest.mark.parametrize(("freq", "min_snr"), [(440, 45), (1000, 40), (3000, 35), (6500, 20)])
def test_tone_round_trip_keeps_frequency_and_level(freq: float, min_snr: float) -> None:
    # 6.5 kHz is above what 8 kHz audio can carry: it shows the wide band really is there.
    payloads, out = round_trip(G722Codec(), tone(freq, 50))
    assert [len(p) for p in payloads] == [160] * 50  # 64 kbit/s: 160 bytes per 20 ms
    assert out.dtype == np.int16
    assert out.shape == (50 * FRAME,)
    steady = out[FRAME * 5 :]
    assert peak_frequency(steady, RATE) == pytest.approx(freq, abs=RATE / steady.size)
    snr, amplitude = sine_fit(steady, freq, RATE)
    assert snr > min_snr
    assert amplitude == pytest.approx(10000, rel=0.03)


def test_silence_round_trip_is_quiet() -> None:
    _, out = round_trip(G722Codec(), np.zeros(10 * FRAME, dtype=np.int16))
    assert np.abs(out).max() < 10


def test_encoder_and_decoder_carry_state() -> None:
    pcm = tone(1000, 10)
    codec = G722Codec()
    first = [codec.encode(frame) for frame in pcm.reshape(-1, FRAME)]
    again = codec.encode(pcm[:FRAME])
    assert again != first[0]  # the same input frame, another state: another payload
    # A second instance is independent: interleaving two streams changes neither.
    a, b = G722Codec(), G722Codec()
    interleaved = []
    for frame in pcm.reshape(-1, FRAME):
        interleaved.append(a.encode(frame))
        b.encode(np.zeros(FRAME, dtype=np.int16))
    assert interleaved == first
    # Frame by frame decoding equals decoding the whole stream at once (state carried over).
    whole = G722Codec().decode(b"".join(first))
    assert np.array_equal(np.concatenate([b.decode(p) for p in first]), whole)
    # A fresh decoder on the middle of a stream does not produce the same samples.
    assert not np.array_equal(G722Codec().decode(first[5]), whole[5 * FRAME : 6 * FRAME])


def test_get_codec_returns_new_instances() -> None:
    assert get_codec("G722") is not get_codec("G722")


def test_inputs() -> None:
    codec = G722Codec()
    pcm = tone(440, 2)
    strided = np.repeat(pcm, 2)[::2]  # a non-contiguous view of the same samples
    assert not strided.flags.c_contiguous
    assert codec.encode(strided) == G722Codec().encode(pcm)
    with pytest.raises(TypeError):
        codec.encode(pcm.astype(np.int32))
    with pytest.raises(ValueError, match="even length"):
        codec.encode(pcm[:3])
    with pytest.raises(ValueError):
        codec.encode(pcm.reshape(2, -1))
    payload = G722Codec().encode(pcm[:FRAME])
    views = [bytearray(payload), memoryview(payload)]
    assert all(np.array_equal(G722Codec().decode(v), G722Codec().decode(payload)) for v in views)
    assert codec.decode(b"").shape == (0,)
    assert np.array_equal(codec.conceal(320), np.zeros(320, dtype=np.int16))
    with pytest.raises(ValueError):
        codec.conceal(-1)


def test_probe_and_catalogue_say_usable() -> None:
    usable, reason = g722_module.probe()
    assert usable, reason
    assert reason.startswith("G.722 64 kbit/s, g722 package 1.")
    assert codec_availability()["G722/16000/1"] == (usable, reason)


# -- without the g722 package ---------------------------------------------------------------------


def _clear_caches() -> None:
    g722_module._module.cache_clear()
    g722_module.probe.cache_clear()
    codec_availability.cache_clear()


@pytest.fixture
def no_g722(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As if the g722 package were not installed (``import G722`` raises ImportError)."""
    monkeypatch.setitem(sys.modules, "G722", None)
    _clear_caches()
    yield
    monkeypatch.undo()
    _clear_caches()


@pytest.mark.usefixtures("no_g722")
def test_missing_package_makes_g722_unusable_with_a_reason(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    usable, reason = g722_module.probe()
    assert not usable
    assert reason.startswith("the g722 Python package is not installed (pip install g722)")
    with pytest.raises(CodecUnavailableError, match="g722"):
        get_codec("G722")
    entries = apply_priorities("G722:255")
    assert [c.name for c in enabled_codecs(entries)] == ["opus", "PCMU", "PCMA"]
    for name in [n for n in os.environ if n.startswith("SIPROC_")]:
        monkeypatch.delenv(name)
    assert parameters_main([]) == 0
    text = capsys.readouterr().out
    assert "G722/16000/1" in text
    assert "no (the g722 Python package is not installed" in text
    assert parameters_main(["--json"]) == 0
    listing = {c["name"]: c for c in json.loads(capsys.readouterr().out)["codecs"]}
    assert listing["G722/16000/1"]["usable"] is False
    assert listing["PCMU/8000/1"]["usable"] is True


def test_parameters_json_says_usable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("SIPROC_")]:
        monkeypatch.delenv(name)
    assert parameters_main(["--json"]) == 0
    listing = {c["name"]: c for c in json.loads(capsys.readouterr().out)["codecs"]}
    assert listing["G722/16000/1"]["usable"] is True
    assert listing["G722/16000/1"]["priority"] == 135
    assert listing["opus/48000/2"]["usable"] is True


# -- on an RTP stream -----------------------------------------------------------------------------


class CountingCodec:
    """A real codec that counts its encode calls (to see what the media tick encodes)."""

    def __init__(self, name: str) -> None:
        self.inner = get_codec(name)
        self.encodes = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def encode(self, pcm: Int16Array) -> bytes:
        self.encodes += 1
        return self.inner.encode(pcm)


def test_rtp_stream_sends_16_khz_audio_on_an_8_khz_clock(
    loop: asyncio.AbstractEventLoop, peer: socket.socket, tmp_path: Path
) -> None:
    stream = RtpStream.open(loop, MediaClock(loop), "127.0.0.1", (40000, 49999), random.Random(3))
    codec = CountingCodec("G722")
    try:
        stream.configure(peer.getsockname(), codec, 9, 101, "sendrecv")  # type: ignore[arg-type]
        assert codec.encodes == 0  # no cached silence for a stateful codec
        path = tmp_path / "t.wav"
        # 8 kHz file: PLAY resamples it to the codec's 16 kHz.
        t = np.arange(4000) / 8000
        soundfile.write(str(path), 0.3 * np.sin(2 * np.pi * 1000 * t), 8000, subtype="PCM_16")
        stream.play(str(path))
        for n in range(28):  # 0.5 s of tone, then 3 ticks of silence
            stream.tick(n * 0.02)
        assert codec.encodes == 28  # every tick encodes, silence included
        packets = receive_rtp(peer, 28)
    finally:
        stream.close()
    headers = [h for h, _ in packets]
    assert {h.payload_type for h in headers} == {9}
    assert {len(p) for _, p in packets} == {160}  # 320 samples in 160 bytes
    first = headers[0].timestamp
    assert [h.timestamp for h in headers] == [(first + 160 * i) % (1 << 32) for i in range(28)]
    decoder = G722Codec()
    audio = np.concatenate([decoder.decode(p) for _, p in packets])
    assert audio.size == 28 * 320
    assert peak_frequency(audio[320 : 25 * 320], RATE) == pytest.approx(1000, abs=2)
    assert np.abs(audio[-320:]).max() < 50  # the silence after the file decodes as silence


def test_rtp_stream_caches_silence_only_for_stateless_codecs(
    loop: asyncio.AbstractEventLoop, peer: socket.socket
) -> None:
    stream = RtpStream.open(loop, MediaClock(loop), "127.0.0.1", (40000, 49999), random.Random(4))
    codec = CountingCodec("PCMU")
    try:
        stream.configure(peer.getsockname(), codec, 0, None, "sendrecv")  # type: ignore[arg-type]
        for n in range(5):
            stream.tick(n * 0.02)
        receive_rtp(peer, 5)
    finally:
        stream.close()
    assert codec.encodes == 1  # once, in configure()

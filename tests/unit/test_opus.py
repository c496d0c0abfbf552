"""Opus (siproc.media.codecs.opus): libopus through ctypes, RFC 7587 framing, PLC/FEC, fmtp,
state, the RTP clock, and siproc without libopus."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from siproc.cli import parameters_main
from siproc.config import load_config
from siproc.media.codecs import CodecUnavailableError, OpusCodec, get_codec
from siproc.media.codecs import opus as opus_module
from siproc.media.codecs.catalog import codec_availability, enabled_codecs
from siproc.media.codecs.opus import OpusSettings, parse_fmtp, settings_for
from siproc.net.clock import MediaClock
from siproc.net.rtp_socket import RtpStream
from tests.rtp_peer import receive_rtp

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
Int16Array = npt.NDArray[np.int16]


def tone(freq: float, frames: int, amplitude: float = 10000.0) -> Int16Array:
    t = np.arange(frames * FRAME) / RATE
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def sine_fit(pcm: npt.NDArray[np.generic], freq: float) -> tuple[float, float]:
    """(SNR in dB, amplitude) of the best sine of ``freq`` through ``pcm`` (delay-independent)."""
    t = np.arange(pcm.size) / RATE
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t), np.ones_like(t)])
    coef, *_ = np.linalg.lstsq(basis.T, pcm.astype(np.float64), rcond=None)
    fit = coef @ basis
    residual = pcm - fit
    return float(10 * np.log10(np.sum(fit**2) / np.sum(residual**2))), float(np.hypot(*coef[:2]))


def peak_frequency(pcm: npt.NDArray[np.generic], rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
    return float(np.fft.rfftfreq(pcm.size, 1 / rate)[np.argmax(spectrum)])


def level(pcm: npt.NDArray[np.generic]) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


def encode_all(codec: OpusCodec, pcm: Int16Array) -> list[bytes]:
    return [codec.encode(frame) for frame in pcm.reshape(-1, FRAME)]


# -- the codec ------------------------------------------------------------------------------------


def test_interface() -> None:
    codec = get_codec("OPUS")
    assert isinstance(codec, OpusCodec)
    assert (codec.name, codec.payload_type, codec.sample_rate, codec.clock_rate) == (
        "opus",
        None,  # dynamic: the SDP assigns it
        48000,
        48000,  # RFC 7587 section 4.1
    )
    assert codec.stateful
    assert codec.channels == 1  # we encode and decode mono although the SDP says opus/48000/2
    assert codec.frame_samples(20) == 960
    assert codec.frame_samples(10) == 480
    with pytest.raises(ValueError):
        codec.frame_samples(-20)
    with pytest.raises(ValueError, match="not Opus"):
        OpusCodec("G722")
    assert codec.bitrate == 32000
    assert opus_module.version().startswith("libopus 1.")


@pytest.mark.parametrize("freq", [440, 1000, 3000, 6000])
def test_tone_round_trip_keeps_frequency_and_level(freq: float) -> None:
    codec = OpusCodec()
    payloads = encode_all(codec, tone(freq, 50))
    assert all(20 < len(p) < 200 for p in payloads)  # 32 kbit/s VBR: about 80 bytes a frame
    assert 60 < sum(map(len, payloads)) / 50 < 100
    out = np.concatenate([codec.decode(p) for p in payloads])
    assert out.dtype == np.int16
    assert out.shape == (50 * FRAME,)
    steady = out[FRAME * 5 :]
    assert peak_frequency(steady) == pytest.approx(freq, abs=RATE / steady.size)
    snr, amplitude = sine_fit(steady, freq)
    assert snr > 25
    assert amplitude == pytest.approx(10000, rel=0.05)


@pytest.mark.parametrize("ms", [10, 20, 40, 60])
def test_other_frame_durations_decode_to_their_length(ms: int) -> None:
    # Peers may send any Opus duration; decode returns what the packet holds.
    samples = RATE * ms // 1000
    packet = OpusCodec().encode(tone(1000, 3)[:samples])
    decoder = OpusCodec()
    assert decoder.decode(packet).shape == (samples,)
    assert decoder.last_samples == samples
    assert decoder.decode(None).shape == (samples,)  # PLC for as long as the last packet


def test_bad_frames_are_our_bug() -> None:
    codec = OpusCodec()
    with pytest.raises(ValueError, match="opus_encode of 1000 samples"):
        codec.encode(np.zeros(1000, dtype=np.int16))
    with pytest.raises(TypeError):
        codec.encode(np.zeros(960, dtype=np.float32))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-D"):
        codec.encode(np.zeros((2, 480), dtype=np.int16))
    strided = np.repeat(tone(440, 1), 2)[::2]
    assert not strided.flags.c_contiguous
    assert len(codec.encode(strided)) > 0


def test_stereo_packets_decode_to_mono() -> None:
    """RFC 7587 section 3.4 / 7: the SDP says opus/48000/2 and a peer may really send stereo;
    our one-channel decoder downmixes it."""
    lib = opus_module._library()
    state = ctypes.create_string_buffer(lib.opus_encoder_get_size(2))
    assert lib.opus_encoder_init(state, RATE, 2, 2048) == 0
    left, right = tone(440, 10), tone(1000, 10, amplitude=2000)
    interleaved = np.ascontiguousarray(np.stack([left, right], axis=1).reshape(-1))
    out_buf = ctypes.create_string_buffer(1500)
    decoder = OpusCodec()
    decoded = []
    for i in range(10):
        frame = interleaved[i * 2 * FRAME : (i + 1) * 2 * FRAME]
        size = lib.opus_encode(state, frame.ctypes.data, FRAME, out_buf, 1500)
        assert size > 0
        decoded.append(decoder.decode(out_buf.raw[:size]))
    out = np.concatenate(decoded)
    assert out.shape == (10 * FRAME,)
    assert peak_frequency(out[FRAME * 3 :]) == pytest.approx(440, abs=7)


def test_packet_loss_concealment() -> None:
    codec = OpusCodec()
    payloads = encode_all(codec, tone(440, 20))
    for p in payloads[:10]:
        codec.decode(p)
    lost = codec.decode(None)  # the 11th packet is lost
    assert lost.shape == (960,)
    assert level(lost) > 1000  # continues the tone rather than dropping to silence
    assert peak_frequency(np.concatenate([lost, codec.conceal(960)])) == pytest.approx(440, abs=25)
    assert codec.decode(b"").shape == (960,)  # an empty payload is a loss too
    assert codec.conceal(100).shape == (120,)  # rounded up to 2.5 ms
    assert codec.conceal(0).shape == (0,)
    assert codec.conceal(7000).shape == (7080,)  # longer than one libopus call
    with pytest.raises(ValueError):
        codec.conceal(-1)
    # The decoder goes on normally with the next packets.
    rest = np.concatenate([codec.decode(p) for p in payloads[14:]])
    assert peak_frequency(rest[960:]) == pytest.approx(440, abs=10)


def test_invalid_packets_are_concealed_and_counted() -> None:
    codec = OpusCodec()
    for junk in (b"\xff\xff\xff", bytearray(b"\x03"), memoryview(b"\x0b" + b"\x00" * 3)):
        out = codec.decode(junk)
        assert out.dtype == np.int16
        assert out.shape == (960,)
    assert codec.decode_errors == 3


def test_inband_fec_recovers_a_lost_packet() -> None:
    sender = OpusCodec(fmtp="useinbandfec=1")
    assert sender.settings.inband_fec
    payloads = encode_all(sender, tone(440, 30, amplitude=6000))
    receiver = OpusCodec()
    for p in payloads[:20]:
        receiver.decode(p)
    recovered = receiver.decode_fec(payloads[21], 960)  # packet 20 is lost; 21 carries it
    assert recovered.shape == (960,)
    assert level(recovered) > 1500
    assert receiver.decode(memoryview(payloads[21])).shape == (960,)
    assert receiver.decode_fec(payloads[22], 0).shape == (0,)


def test_fmtp_tunes_the_encoder() -> None:
    assert parse_fmtp(" MaxAverageBitrate = 20000; useinbandfec=1;;junk;x=") == {
        "maxaveragebitrate": "20000",
        "useinbandfec": "1",
    }
    assert parse_fmtp(None) == {}
    assert settings_for(None) == OpusSettings()
    assert settings_for("maxaveragebitrate=20000").bitrate == 20000
    assert settings_for("maxaveragebitrate=100000").bitrate == 32000  # a cap, not a target
    assert settings_for("maxaveragebitrate=10").bitrate == 6000  # RFC 7587's minimum
    assert settings_for("maxaveragebitrate=lots").bitrate == 32000
    assert settings_for("maxplaybackrate=16000").max_bandwidth == 1103  # wideband
    assert settings_for("maxplaybackrate=8000").max_bandwidth == 1101  # narrowband
    assert settings_for("maxplaybackrate=48000").max_bandwidth == 1105  # fullband
    assert settings_for("cbr=1").cbr
    assert not settings_for("useinbandfec=0").inband_fec
    with pytest.raises(ValueError):
        OpusSettings(bitrate=1000)
    with pytest.raises(ValueError):
        OpusSettings(complexity=11)

    capped = get_codec("opus", "maxaveragebitrate=16000; stereo=1")
    assert isinstance(capped, OpusCodec)
    assert capped.bitrate == 16000
    sizes = [len(p) for p in encode_all(capped, tone(1000, 100))]
    assert sum(sizes) * 8 / 2.0 < 16000 * 1.2  # VBR: an average over 2 s, not a hard cap
    cbr = OpusCodec(fmtp="cbr=1")
    assert len({len(p) for p in encode_all(cbr, tone(1000, 10))}) == 1  # constant size


def test_encoder_and_decoder_carry_state() -> None:
    pcm = tone(1000, 10)
    codec = OpusCodec()
    first = encode_all(codec, pcm)
    assert codec.encode(pcm[:FRAME]) != first[0]  # same input, later state: another packet
    a, b = OpusCodec(), OpusCodec()
    interleaved = []
    for frame in pcm.reshape(-1, FRAME):
        interleaved.append(a.encode(frame))
        b.encode(np.zeros(FRAME, dtype=np.int16))
    assert interleaved == first  # independent instances
    d1, d2 = OpusCodec(), OpusCodec()
    stream = np.concatenate([d1.decode(p) for p in first])
    assert np.array_equal(np.concatenate([d2.decode(p) for p in first]), stream)
    assert not np.array_equal(OpusCodec().decode(first[5]), stream[5 * FRAME : 6 * FRAME])
    assert get_codec("opus") is not get_codec("opus")


def test_decoded_arrays_are_new() -> None:
    codec = OpusCodec()
    payloads = encode_all(codec, tone(440, 2))
    first = codec.decode(payloads[0])
    kept = first.copy()
    codec.decode(payloads[1])
    assert np.array_equal(first, kept)  # not a view of a reused buffer


def test_probe_and_catalogue_say_usable() -> None:
    usable, reason = opus_module.probe()
    assert usable, reason
    assert reason.startswith("Opus 48 kHz mono, libopus 1.")
    assert codec_availability()["opus/48000/2"] == (usable, reason)


# -- without libopus ------------------------------------------------------------------------------


def _clear_caches() -> None:
    opus_module._library.cache_clear()
    opus_module.probe.cache_clear()
    codec_availability.cache_clear()


@pytest.fixture
def no_libopus(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As if libopus were not installed: ``ctypes.util.find_library("opus")`` finds nothing."""
    real = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        return None if name == "opus" else real(name)

    monkeypatch.setattr(ctypes.util, "find_library", find_library)
    for name in [n for n in os.environ if n.startswith("SIPROC_")]:
        monkeypatch.delenv(name)
    _clear_caches()
    yield
    monkeypatch.undo()
    _clear_caches()


@pytest.mark.usefixtures("no_libopus")
def test_missing_libopus_makes_opus_unusable_and_siproc_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    usable, reason = opus_module.probe()
    assert not usable
    assert reason == "libopus not found (install libopus0 or the system's libopus)"
    with pytest.raises(CodecUnavailableError, match="libopus not found"):
        get_codec("opus")
    with pytest.raises(CodecUnavailableError):
        opus_module.version()
    # siproc still configures and offers the rest.
    config = load_config({"SIPROC_CODEC_PRIORITIES": "opus:255"})
    assert [c.name for c in enabled_codecs(config.codecs)] == ["G722", "PCMU", "PCMA"]
    assert parameters_main([]) == 0
    text = capsys.readouterr().out
    opus_line = next(line for line in text.splitlines() if "opus/48000/2" in line)
    assert "140  no (libopus not found" in opus_line
    assert parameters_main(["--json"]) == 0
    listing = {c["name"]: c for c in json.loads(capsys.readouterr().out)["codecs"]}
    assert listing["opus/48000/2"]["usable"] is False
    assert listing["opus/48000/2"]["note"].startswith("libopus not found")
    assert listing["G722/16000/1"]["usable"] is True


def test_unloadable_libopus_is_unusable_with_the_loader_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libopus-missing.so.77")
    _clear_caches()
    try:
        usable, reason = opus_module.probe()
    finally:
        monkeypatch.undo()
        _clear_caches()
    assert not usable
    assert reason.startswith("libopus (libopus-missing.so.77) cannot be used:")


def test_parameters_json_says_usable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("SIPROC_")]:
        monkeypatch.delenv(name)
    assert parameters_main(["--json"]) == 0
    listing = {c["name"]: c for c in json.loads(capsys.readouterr().out)["codecs"]}
    assert listing["opus/48000/2"]["usable"] is True
    assert listing["opus/48000/2"]["priority"] == 140
    assert listing["opus/48000/2"]["note"].startswith("Opus 48 kHz mono, libopus")


# -- on an RTP stream -----------------------------------------------------------------------------


def test_rtp_stream_sends_48_khz_frames(
    loop: asyncio.AbstractEventLoop, peer: socket.socket, tmp_path: Path
) -> None:
    stream = RtpStream.open(loop, MediaClock(loop), "127.0.0.1", (40000, 49999), random.Random(5))
    try:
        stream.configure(peer.getsockname(), get_codec("opus"), 111, 101, "sendrecv")
        path = tmp_path / "t.wav"
        t = np.arange(4000) / 8000  # 0.5 s at 8 kHz: PLAY resamples it to 48 kHz
        soundfile.write(str(path), 0.3 * np.sin(2 * np.pi * 440 * t), 8000, subtype="PCM_16")
        stream.play(str(path))
        for n in range(30):
            stream.tick(n * 0.02)
        packets = receive_rtp(peer, 30)
    finally:
        stream.close()
    headers = [h for h, _ in packets]
    assert {h.payload_type for h in headers} == {111}
    first = headers[0].timestamp
    assert [h.timestamp for h in headers] == [(first + 960 * i) % (1 << 32) for i in range(30)]
    decoder = OpusCodec()
    audio = np.concatenate([decoder.decode(p) for _, p in packets])
    assert audio.size == 30 * 960
    assert peak_frequency(audio[960 : 24 * 960]) == pytest.approx(440, abs=3)
    assert level(audio[-960:]) < 30  # encoded silence after the file


def test_settings_ignore_numbers_int_cannot_take() -> None:
    """A peer's 5000-digit maxaveragebitrate is ignored, not a ValueError from int() that would
    escape from the call's media setup."""
    huge = "9" * 5000
    assert settings_for(f"maxaveragebitrate={huge};maxplaybackrate={huge}") == OpusSettings()

"""DTMF both ways: RFC 4733 telephone-events out and in, and an in-band (Goertzel) detector.

Theory of operation (pure: no I/O, no clock; the media edge drives everything per 20 ms tick):

* :class:`DtmfSender` turns queued digits into telephone-event payloads, one per media tick
  (RFC 4733 section 2.5.1). The stream asks it on every tick, passing the RTP timestamp the
  tick's packet would carry; while it returns a packet, that packet replaces the audio frame.
  All packets of one event carry the timestamp of the event's first packet (section 2.3.1)
  while the stream's own timestamp keeps advancing one frame per tick; the first packet has the
  marker bit (section 2.3.3); the duration grows with every packet (section 2.5.1.2); the
  final packet has the E bit and is sent three times with the same timestamp and duration
  (section 2.5.1.4). Between digits it leaves a pause of silence/audio ticks, so that two
  equal digits in a row are two key presses to any receiver (also one regenerating tones).
  Durations count in units of the telephone-event payload type's clock rate (section 2.3.5),
  which the peer may have chosen other than the audio's (Opus at 48000 with events at 8000):
  the sender converts the stream's timestamp units to it (:meth:`DtmfSender.set_clocks`).
* :class:`DtmfReceiver` reports each key press exactly once from received telephone-event
  packets (section 2.5.2): an event is identified by its SSRC and RTP timestamp, so updates,
  the three end packets, redundant copies and reordered packets of the same event are
  recognised and dropped; the key is reported at the first packet that arrives for a new
  event, whichever it is. A long event split into segments (section 2.5.2.3: each segment a new
  timestamp) stays one key press. Events may come on several payload types at different clock
  rates (RFC 4733 section 7.1.1); a segment continues an event only at the same clock rate,
  the one its timestamps and duration are counted in.
* :class:`GoertzelDetector` finds DTMF in decoded audio when the peer sends no
  telephone-events. It measures the eight DTMF frequencies (ITU-T Q.23) in 10 ms blocks with the
  Goertzel algorithm (one DFT bin per frequency, computed for all blocks of a frame as one
  matrix product), checks level, twist and the share of the block's energy in the two tones,
  and debounces: a digit is reported after two consecutive blocks agree and is re-armed after
  two blocks without it. A 40 ms tone therefore spans at least three whole blocks and a 40 ms
  gap at least three, so quick dialling is not missed, while a long press stays one digit.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "DTMF_COLUMN_FREQUENCIES",
    "DTMF_EVENTS",
    "DTMF_ROW_FREQUENCIES",
    "DtmfReceiver",
    "DtmfSender",
    "EventPacket",
    "GoertzelDetector",
    "TelephoneEvent",
    "goertzel_power",
    "pack_event",
    "parse_event",
]

#: RFC 4733 section 3.2, table 1: event codes 0-15 are the DTMF keys, in this order.
DTMF_EVENTS: Final = "0123456789*#ABCD"
_EVENT_CODES: Final = {char: code for code, char in enumerate(DTMF_EVENTS)}

#: RFC 4733 section 2.3.5: duration is an unsigned 16-bit count of timestamp units.
MAX_DURATION: Final = 0xFFFF
#: RFC 4733 section 2.3.4: volume in -dBm0, 0-63. 10 means -10 dBm0, a usual DTMF level.
DEFAULT_VOLUME: Final = 10
#: RFC 4733 section 2.5.1.4: the final packet of an event is sent three times.
END_PACKETS: Final = 3
#: Tone of 5 ticks (100 ms at 20 ms ptime; ITU-T Q.24 wants at least 40 ms) and a pause of
#: 3 ticks (60 ms) after each digit.
TONE_TICKS: Final = 5
PAUSE_TICKS: Final = 3

_TS_MOD: Final = 1 << 32
_TS_HALF: Final = 1 << 31


# -- the payload (RFC 4733 section 2.3) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One telephone-event payload (RFC 4733 section 2.3, figure 1)."""

    event: int  # 0-255; 0-15 are DTMF (section 3.2)
    end: bool  # the E bit
    volume: int  # 0-63, -dBm0
    duration: int  # 0-65535 timestamp units since the event's timestamp

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise ValueError(f"telephone-event code out of range: {self.event}")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"telephone-event volume out of range: {self.volume}")
        if not 0 <= self.duration <= MAX_DURATION:
            raise ValueError(f"telephone-event duration out of range: {self.duration}")

    @property
    def digit(self) -> str | None:
        """The DTMF key of a code 0-15, else None (flash-hook, tones of other sections)."""
        return DTMF_EVENTS[self.event] if self.event < len(DTMF_EVENTS) else None


def pack_event(event: int, end: bool, volume: int, duration: int) -> bytes:
    """The 4-byte payload: event, E|R|volume, duration (R, reserved, is sent as 0)."""
    TelephoneEvent(event, end, volume, duration)  # validates
    return bytes((event, (0x80 if end else 0) | volume, duration >> 8, duration & 0xFF))


def parse_event(payload: bytes | bytearray | memoryview) -> TelephoneEvent:
    """Parse the first event of a payload; raises ValueError if it is shorter than 4 bytes.

    Only one event per packet exists in RFC 4733 itself (several go through RFC 2198
    redundancy, another payload type), so anything after the first 4 bytes is ignored.
    """
    if len(payload) < 4:
        raise ValueError(f"telephone-event payload too short: {len(payload)} bytes")
    event, flags, high, low = payload[0], payload[1], payload[2], payload[3]
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, (high << 8) | low)


# -- sending (RFC 4733 section 2.5.1) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventPacket:
    """What to send on this tick instead of audio.

    ``timestamp`` is the RTP timestamp of the packet: the event's start (RFC 4733 section
    2.3.1), not the tick's. ``marker`` is set on the first packet of an event (section 2.3.3).
    """

    payload: bytes
    marker: bool
    timestamp: int
    end: bool


class DtmfSender:
    """RFC 4733 sender for one stream; see the module docstring.

    Per digit: ``tone_ticks`` packets with the duration growing by one frame each (the first
    covers its own frame), then ``end_packets`` copies of the end packet (E bit, duration of
    the whole tone), then ``pause_ticks`` ticks of audio. At 20 ms and 8000 Hz that is 5
    packets (durations 160 ... 800), three end packets with 800, and 60 ms of pause.
    """

    __slots__ = (
        "_code",
        "_duration",
        "_event_rate",
        "_pending",
        "_phase_ticks",
        "_rtp_rate",
        "_start",
        "end_packets",
        "pause_ticks",
        "tone_ticks",
        "volume",
    )

    def __init__(
        self,
        *,
        tone_ticks: int = TONE_TICKS,
        end_packets: int = END_PACKETS,
        pause_ticks: int = PAUSE_TICKS,
        volume: int = DEFAULT_VOLUME,
    ) -> None:
        if tone_ticks < 1 or end_packets < 1 or pause_ticks < 0:
            raise ValueError("need tone_ticks >= 1, end_packets >= 1 and pause_ticks >= 0")
        if not 0 <= volume <= 63:
            raise ValueError(f"telephone-event volume out of range: {volume}")
        self.tone_ticks = tone_ticks
        self.end_packets = end_packets
        self.pause_ticks = pause_ticks
        self.volume = volume
        self._pending: deque[int] = deque()  # event codes not started yet
        self._code: int | None = None  # the event in progress (tone, end packets or pause)
        self._start = 0  # its RTP timestamp
        self._duration = 0
        self._phase_ticks = 0  # ticks spent on the event in progress
        self._event_rate = self._rtp_rate = 1  # durations: timestamp units * event / rtp

    def set_clocks(self, event_rate: int, rtp_rate: int) -> None:
        """Count durations at ``event_rate`` Hz, the clock rate of the telephone-event payload
        type (RFC 4733 section 2.3.5), while the timestamps given to :meth:`next_packet` run at
        ``rtp_rate`` Hz (the audio's). Equal rates, the usual case (section 2.1), convert
        nothing. The packets keep the stream's timestamps, which identify the event."""
        if event_rate <= 0 or rtp_rate <= 0:
            raise ValueError(f"bad clock rates {event_rate}/{rtp_rate}")
        divisor = math.gcd(event_rate, rtp_rate)
        self._event_rate, self._rtp_rate = event_rate // divisor, rtp_rate // divisor

    def queue(self, digits: str) -> None:
        """Queue DTMF keys (``0-9 * # A-D``, case-insensitive) after any already queued.
        Raises ValueError naming the first invalid character; then nothing is queued."""
        codes = []
        for char in digits.upper():
            code = _EVENT_CODES.get(char)
            if code is None:
                raise ValueError(f"invalid DTMF character {char!r}")
            codes.append(code)
        self._pending.extend(codes)

    @property
    def pending(self) -> str:
        """The queued keys not started yet."""
        return "".join(DTMF_EVENTS[code] for code in self._pending)

    @property
    def busy(self) -> bool:
        """True while a digit is being sent, its pause runs, or digits wait."""
        return self._code is not None or bool(self._pending)

    def clear(self) -> None:
        """Drop the queue and any event in progress (the stream stopped sending)."""
        self._pending.clear()
        self._code = None

    def next_packet(self, timestamp: int, samples: int) -> EventPacket | None:
        """Advance one tick. ``timestamp`` is the RTP timestamp this tick's packet carries and
        ``samples`` the frame length in timestamp units. Returns the packet to send instead
        of audio, or None: send audio (nothing to do, or the pause between digits)."""
        if self._code is None:
            if not self._pending:
                return None
            self._code = self._pending.popleft()
            self._start = timestamp
            self._phase_ticks = 0
        tick = self._phase_ticks
        self._phase_ticks += 1
        code = self._code
        if self._phase_ticks >= self.tone_ticks + self.end_packets + self.pause_ticks:
            self._code = None  # this tick ends the digit (its last packet, or its pause)
        if tick < self.tone_ticks:
            # Time since the event's start, through the end of this frame (section 2.5.1.2);
            # measured on the timestamps, so ticks the clock skipped are counted too.
            elapsed = (timestamp - self._start + samples) % _TS_MOD
            if self._event_rate != self._rtp_rate:
                elapsed = elapsed * self._event_rate // self._rtp_rate
            self._duration = min(elapsed, MAX_DURATION)
            payload = pack_event(code, False, self.volume, self._duration)
            return EventPacket(payload, tick == 0, self._start, False)
        if tick < self.tone_ticks + self.end_packets:
            payload = pack_event(code, True, self.volume, self._duration)
            return EventPacket(payload, False, self._start, True)
        return None


# -- receiving (RFC 4733 section 2.5.2) -------------------------------------------------------


class DtmfReceiver:
    """Reports each DTMF key press once from received telephone-event packets.

    An event is the pair (SSRC, RTP timestamp). The first packet of a pair not seen before
    reports its key; every later packet of that pair (updates, end packets and their
    retransmissions, late or reordered copies) is dropped. The last ``memory`` pairs are
    remembered, far more than can be in flight. A new timestamp that continues the previous,
    unfinished event of the same key exactly where it ends is a segment of a long event
    (section 2.5.2.3), not a new key press.
    """

    __slots__ = ("_last", "_order", "_seen", "memory")

    def __init__(self, memory: int = 64) -> None:
        if memory < 1:
            raise ValueError(f"memory must be at least 1, not {memory}")
        self.memory = memory
        self._seen: set[tuple[int, int]] = set()
        self._order: deque[tuple[int, int]] = deque()
        # The latest event started: (ssrc, timestamp, code, duration so far, ended, clock).
        self._last: tuple[int, int, int, int, bool, int] | None = None

    def reset(self) -> None:
        self._seen.clear()
        self._order.clear()
        self._last = None

    def on_packet(
        self,
        timestamp: int,
        payload: bytes | bytearray | memoryview,
        ssrc: int = 0,
        clock_rate: int = 8000,
    ) -> str | None:
        """Account one telephone-event packet; return its key if it starts a new key press.

        ``clock_rate`` is that of the packet's payload type: its timestamp and duration count
        in those units. Malformed payloads and events that are not DTMF keys (codes above 15)
        return None.
        """
        try:
            event = parse_event(payload)
        except ValueError:
            return None
        key = (ssrc, timestamp)
        last = self._last
        if key in self._seen:
            if last is not None and last[:2] == key:
                ended = last[4] or event.end
                duration = max(last[3], event.duration) if last[5] == clock_rate else last[3]
                self._last = (ssrc, timestamp, last[2], duration, ended, last[5])
            return None
        self._remember(key)
        continues = (
            last is not None
            and last[0] == ssrc
            and last[2] == event.event
            and last[5] == clock_rate
            and not last[4]
            and last[3] > 0
            and (timestamp - last[1]) % _TS_MOD == last[3]
        )
        newer = last is None or last[0] != ssrc or 0 < (timestamp - last[1]) % _TS_MOD < _TS_HALF
        if newer:
            self._last = (ssrc, timestamp, event.event, event.duration, event.end, clock_rate)
        if continues:
            return None
        return event.digit

    def _remember(self, key: tuple[int, int]) -> None:
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self.memory:
            self._seen.discard(self._order.popleft())


# -- in-band detection (Goertzel) -------------------------------------------------------------

#: ITU-T Q.23: the low (row) and high (column) group frequencies, Hz.
DTMF_ROW_FREQUENCIES: Final = (697.0, 770.0, 852.0, 941.0)
DTMF_COLUMN_FREQUENCIES: Final = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD: Final = ("123A", "456B", "789C", "*#0D")  # [row][column]

BLOCK_MS: Final = 10  # analysis block: 80 samples at 8 kHz
#: Each tone's amplitude must reach about -37 dBm0 (300 of 32767 full scale; ITU-T Q.24
#: asks for operation down to about -26 dBm0 per tone).
MIN_TONE_AMPLITUDE: Final = 300.0
#: Twist: the column tone may be up to 8 dB stronger ("normal twist") and the row tone up
#: to 6 dB stronger ("reverse twist") than the other.
NORMAL_TWIST_DB: Final = 8.0
REVERSE_TWIST_DB: Final = 6.0
#: Each group's strongest tone must beat the others of its group by this much (in a 10 ms
#: block a neighbour row leaks about 10 dB below the true one).
GROUP_MARGIN_DB: Final = 6.0
#: The two tones must hold at least this share of the block's energy (speech, music, noise
#: and chords spread their energy elsewhere).
MIN_TONE_SHARE: Final = 0.7
DETECT_BLOCKS: Final = 2  # consecutive blocks that must agree before a digit is reported
REARM_BLOCKS: Final = 2  # blocks without the digit before the same digit counts again


def goertzel_power(samples: npt.ArrayLike, freq_hz: float, sample_rate: int) -> float:
    """The Goertzel algorithm, as written: squared magnitude of ``samples``' DFT at
    ``freq_hz`` (a scalar reference; :class:`GoertzelDetector` computes the same quantity for
    eight frequencies and many blocks at once)."""
    coeff = 2.0 * math.cos(2.0 * math.pi * freq_hz / sample_rate)
    s1 = s2 = 0.0
    for x in np.asarray(samples, dtype=np.float64).tolist():
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


class GoertzelDetector:
    """In-band DTMF detector for one received stream; feed it decoded int16 frames.

    :meth:`feed` takes frames of any length (20 ms ones in practice), analyses every whole
    10 ms block and returns the keys that started, usually none.
    """

    __slots__ = (
        "_basis",
        "_block",
        "_current",
        "_latched",
        "_min_energy",
        "_misses",
        "_pending",
        "_run",
        "_threshold",
        "sample_rate",
    )

    def __init__(self, sample_rate: int = 8000) -> None:
        if sample_rate < 4000:
            raise ValueError(f"sample rate {sample_rate} Hz is too low for DTMF")
        self.sample_rate = sample_rate
        block = sample_rate * BLOCK_MS // 1000
        self._block = block
        n = np.arange(block, dtype=np.float64)[:, None]
        freqs = np.array(DTMF_ROW_FREQUENCIES + DTMF_COLUMN_FREQUENCIES)[None, :]
        omega = 2.0 * np.pi * freqs / sample_rate
        # Real and imaginary parts of the DFT at the eight frequencies: block @ basis gives,
        # per block, exactly the values the Goertzel recursion ends with.
        self._basis = np.concatenate([np.cos(omega * n), np.sin(omega * n)], axis=1)
        # |X(f)|^2 of a sine of amplitude A over N samples is (A N / 2)^2.
        self._threshold = (MIN_TONE_AMPLITUDE * block / 2.0) ** 2
        # ... and its energy A^2 N / 2: two tones at the minimum level hold A^2 N.
        self._min_energy = MIN_TONE_AMPLITUDE**2 * block
        self._pending = np.zeros(0, dtype=np.float64)
        self._current: str | None = None  # the per-block verdict of the last block
        self._run = 0  # consecutive blocks with that verdict
        self._latched: str | None = None  # the digit reported and not re-armed yet
        self._misses = 0  # consecutive blocks without the latched digit

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float64)
        self._current = None
        self._run = 0
        self._latched = None
        self._misses = 0

    def feed(self, frame: npt.NDArray[np.int16]) -> str:
        """Analyse ``frame`` (mono int16 at ``sample_rate``); return the keys detected in it,
        in order (almost always ``""``, at most one per two blocks)."""
        samples = frame.astype(np.float64)
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        whole = samples.size // self._block * self._block
        self._pending = samples[whole:]
        if not whole:
            return ""
        blocks = samples[:whole].reshape(-1, self._block)
        keys = ""
        for verdict in self._classify(blocks):
            key = self._debounce(verdict)
            if key is not None:
                keys += key
        return keys

    def _classify(self, blocks: npt.NDArray[np.float64]) -> list[str | None]:
        """The key each block holds by level, twist and energy share, or None."""
        energy = np.einsum("ij,ij->i", blocks, blocks)  # sum of squares per block
        if float(energy.max()) < self._min_energy:  # silence or quiet noise: the usual case
            return [None] * len(energy)
        parts = blocks @ self._basis
        powers = parts[:, :8] ** 2 + parts[:, 8:] ** 2  # |X(f)|^2, shape (blocks, 8)
        verdicts: list[str | None] = []
        margin = 10.0 ** (-GROUP_MARGIN_DB / 10.0)
        normal = 10.0 ** (NORMAL_TWIST_DB / 10.0)
        reverse = 10.0 ** (REVERSE_TWIST_DB / 10.0)
        for power, total in zip(powers.tolist(), energy.tolist(), strict=True):
            rows, cols = power[:4], power[4:]
            row = max(range(4), key=rows.__getitem__)
            col = max(range(4), key=cols.__getitem__)
            row_power, col_power = rows[row], cols[col]
            if row_power < self._threshold or col_power < self._threshold:
                verdicts.append(None)
                continue
            if col_power > row_power * normal or row_power > col_power * reverse:
                verdicts.append(None)
                continue
            if any(p > row_power * margin for i, p in enumerate(rows) if i != row) or any(
                p > col_power * margin for i, p in enumerate(cols) if i != col
            ):
                verdicts.append(None)
                continue
            # |X|^2 = (A N / 2)^2 and the tone's energy is A^2 N / 2: energy = 2 |X|^2 / N.
            share = 2.0 * (row_power + col_power) / self._block / total if total else 0.0
            verdicts.append(_KEYPAD[row][col] if share >= MIN_TONE_SHARE else None)
        return verdicts

    def _debounce(self, verdict: str | None) -> str | None:
        if verdict == self._current:
            self._run += 1
        else:
            self._current, self._run = verdict, 1
        if self._latched is not None:
            if verdict == self._latched:
                self._misses = 0
            else:
                self._misses += 1
                if self._misses >= REARM_BLOCKS:
                    self._latched = None
        if verdict is not None and self._latched is None and self._run >= DETECT_BLOCKS:
            self._latched, self._misses = verdict, 0
            return verdict
        return None

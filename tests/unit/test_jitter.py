"""The jitter buffer in tick time: no clock, no sockets; pop() is one media tick."""

from __future__ import annotations

import numpy as np
import pytest

from siproc.media.jitter import (
    LATE_RESYNC_TICKS,
    TRIM_WINDOW,
    JitterBuffer,
    LossConcealer,
    PushResult,
)

FRAME = 160  # 20 ms at 8000 Hz
SSRC = 0x1234ABCD
TARGET = 3


def payload(n: int) -> bytes:
    """A recognisable payload for packet n."""
    return n.to_bytes(4, "big") * 40


def number(data: bytes | None) -> int | None:
    return None if data is None else int.from_bytes(data[:4], "big")


class Sender:
    """Packets of one stream: sequence numbers and timestamps from chosen origins, with wrap."""

    def __init__(self, seq0: int = 1000, ts0: int = 50_000, ssrc: int = SSRC) -> None:
        self.seq0, self.ts0, self.ssrc = seq0, ts0, ssrc

    def packet(self, n: int, ts_extra: int = 0) -> tuple[int, int, int, bytes]:
        return (
            (self.seq0 + n) & 0xFFFF,
            (self.ts0 + n * FRAME + ts_extra) % (1 << 32),
            self.ssrc,
            payload(n),
        )


def run(
    buffer: JitterBuffer, schedule: dict[int, list[tuple[int, int, int, bytes]]], ticks: int
) -> list[int | None]:
    """Push schedule[t] before tick t, pop once per tick; the packet numbers played."""
    out = []
    for tick in range(ticks):
        for packet in schedule.get(tick, []):
            buffer.push(*packet)
        out.append(number(buffer.pop()))
    return out


def in_time(sender: Sender, count: int, start_tick: int = 0) -> dict[int, list]:  # type: ignore[type-arg]
    return {start_tick + n: [sender.packet(n)] for n in range(count)}


def test_in_order_plays_every_frame_after_the_target_delay() -> None:
    buffer = JitterBuffer(FRAME)
    played = run(buffer, in_time(Sender(), 20), 26)
    assert played == [None] * TARGET + list(range(20)) + [None] * 3
    assert buffer.stats.played == 20
    assert buffer.stats.missing == 0 and buffer.stats.late == 0
    assert buffer.stats.resyncs == 1  # the start


def test_pop_before_any_packet_is_none() -> None:
    buffer = JitterBuffer(FRAME)
    assert [buffer.pop() for _ in range(5)] == [None] * 5
    assert buffer.ssrc is None and buffer.depth == 0


def test_reordering_within_the_target_is_repaired() -> None:
    sender = Sender()
    schedule = in_time(sender, 12)
    # 4 and 5 swap, 8 arrives two ticks after 9 (still ahead of its playout)
    schedule[4], schedule[5] = [sender.packet(5)], [sender.packet(4)]
    schedule[8] = []
    schedule[9] = [sender.packet(9)]
    schedule[10] = [sender.packet(10), sender.packet(8)]
    buffer = JitterBuffer(FRAME)
    assert run(buffer, schedule, 15) == [None] * TARGET + list(range(12))
    assert buffer.stats.missing == 0 and buffer.stats.late == 0


def test_loss_gives_none_and_is_counted() -> None:
    sender = Sender()
    schedule = in_time(sender, 10)
    del schedule[4], schedule[5]
    buffer = JitterBuffer(FRAME)
    played = run(buffer, schedule, 13)
    assert played == [None] * TARGET + [0, 1, 2, 3, None, None, 6, 7, 8, 9]
    assert buffer.stats.missing == 2


def test_duplicates_are_dropped() -> None:
    sender = Sender()
    schedule = in_time(sender, 6)
    schedule[2] = [sender.packet(2), sender.packet(2)]
    schedule[5] = [sender.packet(5), sender.packet(1)]  # 1 again, after it was played
    buffer = JitterBuffer(FRAME)
    played = run(buffer, schedule, 9)
    assert played == [None] * TARGET + list(range(6))
    assert buffer.stats.duplicates == 1
    assert buffer.stats.late == 1


def test_late_packets_are_dropped_and_the_timeline_kept() -> None:
    sender = Sender()
    schedule = in_time(sender, 12)
    schedule[5] = []
    schedule[9].append(sender.packet(5))  # 4 ticks late: its frame was played at tick 8
    buffer = JitterBuffer(FRAME)
    played = run(buffer, schedule, 15)
    assert played == [None] * TARGET + [0, 1, 2, 3, 4, None, 6, 7, 8, 9, 10, 11]
    assert buffer.stats.late == 1
    assert buffer.stats.resyncs == 1


@pytest.mark.parametrize(("seq0", "ts0"), [(65530, 50_000), (1000, (1 << 32) - 3 * FRAME)])
def test_wrap_around_of_sequence_and_timestamp(seq0: int, ts0: int) -> None:
    sender = Sender(seq0=seq0, ts0=ts0)
    schedule = in_time(sender, 12)
    schedule[6], schedule[7] = [sender.packet(7)], [sender.packet(6)]  # reordered across
    buffer = JitterBuffer(FRAME)
    assert run(buffer, schedule, 15) == [None] * TARGET + list(range(12))
    assert buffer.stats.resyncs == 1 and buffer.stats.early == 0


def test_both_wrap_at_once_with_65535_then_0() -> None:
    sender = Sender(seq0=65535 - 4, ts0=(1 << 32) - 5 * FRAME)
    seqs = [sender.packet(n)[0] for n in range(8)]
    assert seqs[4:6] == [65535, 0]
    buffer = JitterBuffer(FRAME)
    assert run(buffer, in_time(sender, 8), 11) == [None] * TARGET + list(range(8))


def test_ssrc_change_resets_at_once() -> None:
    first, second = Sender(ssrc=1), Sender(seq0=7, ts0=999_999, ssrc=2)
    schedule = in_time(first, 5)
    for n in range(5):
        schedule[5 + n] = [second.packet(100 + n)]
    buffer = JitterBuffer(FRAME)
    played = run(buffer, schedule, 13)
    # first stream: 0..4 from tick 3; at tick 5 the new SSRC restarts the timeline
    assert played[:5] == [None, None, None, 0, 1]
    assert played[5:8] == [None, None, None]
    assert played[8:] == [100, 101, 102, 103, 104]
    assert buffer.ssrc == 2
    assert buffer.stats.ssrc_changes == 1


def test_forward_timestamp_jump_in_sequence_resyncs() -> None:
    sender = Sender()
    schedule = in_time(sender, 5)
    for n in range(5, 10):  # the sender's timestamps jump by 10 s, sequence numbers go on
        schedule[n] = [sender.packet(n, ts_extra=80_000)]
    buffer = JitterBuffer(FRAME)
    played = run(buffer, schedule, 13)
    assert played == [None] * 3 + [0, 1] + [None] * 3 + [5, 6, 7, 8, 9]
    assert buffer.stats.resyncs == 2


def test_a_stray_far_ahead_is_dropped_without_resync() -> None:
    sender = Sender()
    schedule = in_time(sender, 10)
    stray = (4321, (sender.ts0 + 5_000_000) % (1 << 32), SSRC, payload(99))
    schedule[4].append(stray)
    buffer = JitterBuffer(FRAME)
    assert run(buffer, schedule, 13) == [None] * TARGET + list(range(10))
    assert buffer.stats.early == 1 and buffer.stats.resyncs == 1


def test_two_packets_in_sequence_far_ahead_resync_on_the_second() -> None:
    sender = Sender()
    schedule = in_time(sender, 4)
    restarted = Sender(seq0=30_000, ts0=sender.ts0 + 9_000_000)  # same SSRC, new origins
    for n in range(6):
        schedule[4 + n] = [restarted.packet(n)]
    buffer = JitterBuffer(FRAME)
    played = run(buffer, schedule, 13)
    # packet 0 of the new timeline is dropped as a stray; 1 follows it in sequence: resync.
    assert played == [None] * 3 + [0, 1] + [None] * 3 + [1, 2, 3, 4, 5]
    assert buffer.stats.early == 1 and buffer.stats.resyncs == 2


def test_backward_timestamp_jump_resyncs_after_a_late_run() -> None:
    sender = Sender()
    schedule = in_time(sender, 6)
    for n in range(6, 30):  # the timestamps fall back by 0.5 s, the sequence goes on
        schedule[n] = [sender.packet(n, ts_extra=-4000)]
    buffer = JitterBuffer(FRAME)
    played = run(buffer, schedule, 33)
    resync_tick = 6 + LATE_RESYNC_TICKS
    assert played[: 3 + 6] == [None] * 3 + list(range(6))
    # late packets dropped until the resync; then target delay, then in order again
    first = played.index(resync_tick)
    assert first == resync_tick + TARGET
    assert played[first:] == list(range(resync_tick, 30))
    assert buffer.stats.resyncs == 2
    assert buffer.stats.late == LATE_RESYNC_TICKS


def test_burst_after_a_network_stall_keeps_the_timeline() -> None:
    """Packets 5..14 are held for 10 ticks and arrive at once: the late part is dropped, the
    rest plays on time; no resync, no lasting extra delay."""
    sender = Sender()
    schedule = in_time(sender, 30)
    for n in range(5, 15):
        del schedule[n]
    schedule[15] = [sender.packet(n) for n in range(5, 16)]
    buffer = JitterBuffer(FRAME)
    played = run(buffer, schedule, 33)
    assert played[:8] == [None] * 3 + [0, 1, 2, 3, 4]
    # frame k is due at tick k + 3: at tick 15, frames 5..11 are late, 12 is just in time
    assert played[8:15] == [None] * 7
    assert played[15:] == list(range(12, 30))
    assert buffer.stats.resyncs == 1
    assert buffer.stats.late == 7


def test_silence_gap_of_the_sender_plays_on_without_resync() -> None:
    """Silence suppression (RFC 3551 section 4.1): no packets for a second, then the sequence
    goes on and the timestamp has followed the time."""
    sender = Sender()
    schedule = in_time(sender, 5)
    for n in range(50, 55):
        seq, ts, ssrc, data = sender.packet(n)
        schedule[n] = [((seq - 45) & 0xFFFF, ts, ssrc, data)]
    buffer = JitterBuffer(FRAME)
    played = run(buffer, schedule, 60)
    assert [p for p in played if p is not None] == [0, 1, 2, 3, 4, 50, 51, 52, 53, 54]
    assert played.index(50) == 53
    assert buffer.stats.resyncs == 1 and buffer.stats.late == 0


def test_a_fast_sender_is_trimmed_back_to_the_target() -> None:
    """A burst of 8 frames at the start leaves the buffer deep: it is trimmed, one frame per
    window, until the depth is back near the target."""
    sender = Sender()
    schedule: dict[int, list] = {0: [sender.packet(n) for n in range(9)]}  # type: ignore[type-arg]
    for n in range(9, 200):
        schedule[n - 8] = [sender.packet(n)]
    buffer = JitterBuffer(FRAME)
    run(buffer, schedule, 150)
    assert buffer.stats.trimmed >= 4
    assert buffer.depth <= TARGET + 2
    assert buffer.stats.resyncs == 1


def test_no_trim_at_steady_state() -> None:
    buffer = JitterBuffer(FRAME)
    run(buffer, in_time(Sender(), 10 * TRIM_WINDOW), 10 * TRIM_WINDOW)
    assert buffer.stats.trimmed == 0


def test_memory_is_bounded() -> None:
    buffer = JitterBuffer(FRAME)
    sender = Sender()
    for n in range(1000):  # a flood, all pushed without any pop
        buffer.push(*sender.packet(n))
    assert len(buffer) <= buffer.target_frames + buffer.max_early_frames + 1


def test_payload_is_copied() -> None:
    data = bytearray(payload(0))
    buffer = JitterBuffer(FRAME, target_frames=0)
    assert buffer.push(1, 0, SSRC, memoryview(data)) is PushResult.RESYNC
    data[:] = b"\0" * len(data)
    assert number(buffer.pop()) == 0


def test_reset_changes_the_frame_length() -> None:
    buffer = JitterBuffer(FRAME)
    buffer.push(1, 0, SSRC, b"x")
    buffer.reset(320)
    assert buffer.frame_ts == 320 and buffer.ssrc is None and len(buffer) == 0
    with pytest.raises(ValueError):
        buffer.reset(0)


@pytest.mark.parametrize("kwargs", [{"frame_ts": 0}, {"target_frames": -1}])
def test_bad_arguments(kwargs: dict[str, int]) -> None:
    args = {"frame_ts": FRAME, **kwargs}
    with pytest.raises(ValueError):
        JitterBuffer(**args)


# -- loss concealment ----------------------------------------------------------------------------


def test_concealer_repeats_once_at_half_amplitude_then_silence() -> None:
    plc = LossConcealer(4)
    frame = np.array([1000, -1000, 3, -3], dtype=np.int16)
    assert plc.conceal(frame) is frame
    assert plc.conceal(None).tolist() == [500, -500, 1, -2]
    assert plc.conceal(None).tolist() == [0, 0, 0, 0]
    assert plc.conceal(None).tolist() == [0, 0, 0, 0]


def test_concealer_silence_before_any_frame_and_after_reset() -> None:
    plc = LossConcealer(3)
    assert plc.conceal(None).tolist() == [0, 0, 0]
    plc.conceal(np.ones(3, dtype=np.int16))
    plc.reset()
    assert plc.conceal(None).tolist() == [0, 0, 0]

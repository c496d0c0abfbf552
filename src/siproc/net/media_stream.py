"""`MediaStream`: what a call sees of its media, wherever it runs.

A call's audio is an `RtpStream` in the main process (SIPROC_MEDIA_WORKERS=0) or a
`RemoteStream` that drives one in a media worker. Both satisfy this protocol, so the call layer
never asks which one it has: errors found after a command (a sound card that fails to open, a
recording that cannot be finished) come back through ``on_error`` from either, and ``on_lost``
is called only by a stream whose worker died. A ``STREAM`` to a voice bot runs next to the
audio, wherever that is (`bot_start`: net/media_stream_edge.py); its events come back through
the ``report`` it was given; so do a handler's audio pipes (``audio_fds``, SIPROC_AUDIO_FDS:
net/audio_pipes.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from siproc.media.codecs import AudioCodec
from siproc.net.rtp_state import Address, RtpStats
from siproc.sdp.sdes import SrtpParams

if TYPE_CHECKING:
    from siproc.net.media_stream_edge import StreamSpec

__all__ = ["MediaStream"]


class MediaStream(Protocol):
    """One call's audio stream; see the module docstring."""

    local_port: int
    stats: RtpStats
    on_stopped: Callable[[str], None] | None  # a PLAY file ended
    on_dtmf: Callable[[str], None] | None  # a key received (RFC 4733 or in-band)
    on_rtp_timeout: Callable[[], None] | None  # see watch_rtp()
    on_error: Callable[[str, str], None] | None  # (verb, reason) of a late failure
    on_lost: Callable[[], None] | None  # the media is gone (its worker died)

    @property
    def closed(self) -> bool: ...
    @property
    def sample_rate(self) -> int: ...  # the codec's PCM rate (8000 before one is agreed)
    def configure(
        self,
        remote: tuple[str, int],
        codec: AudioCodec,
        payload_type: int,
        telephone_event_pt: int | None,
        direction: str,
        *,
        telephone_event_rate: int | None = None,
        receive_telephone_events: Mapping[int, int] | None = None,
    ) -> None: ...
    def configure_rtcp(self, *, mux: bool, remote: Address | None = None) -> None: ...
    def configure_srtp(self, params: SrtpParams | None) -> None: ...
    def latch_from(self, hosts: Sequence[str]) -> None: ...
    def guard_unproven(self, packets: int) -> None: ...
    def prove(self) -> None: ...
    def watch_rtp(self, seconds: float) -> None: ...
    def log_as(self, call: str) -> None: ...
    def start(self) -> None: ...
    def play(self, path: str) -> object: ...
    def stop_last(self) -> str | None: ...
    def start_recording(self, path: str, stereo: bool = False) -> None: ...
    def stop_recording(self) -> str | None: ...
    def send_dtmf(self, digits: str) -> None: ...
    def sound_card(self, verb: str, device: str) -> None: ...
    def bot_start(self, spec: StreamSpec, report: Callable[[str, str], None]) -> None: ...
    def bot_stop(self) -> None: ...
    def audio_fds(self, to_handler: int, from_handler: int) -> None: ...  # takes both fds
    def close(self) -> None: ...
    def when_closed(self, callback: Callable[[], None]) -> None: ...

"""DTMF of an RTP stream (:mod:`siproc.media.dtmf`), a mixin of
:class:`~siproc.net.rtp_socket.RtpStream`.

``send_dtmf`` queues RFC 4733 events whose packets replace the audio on their ticks (PT
``telephone_event_pt``, the event's start timestamp, while the stream timestamp runs on).
Received telephone-events, on any negotiated telephone-event payload type at its own clock rate
(RFC 4733 section 7.1.1), are reported once per key press through ``on_dtmf`` (the stream's
receive path feeds :class:`~siproc.media.dtmf.DtmfReceiver`); without telephone-event, the
decoded audio goes through a Goertzel detector. Keys due while the stream may not send (hold)
are skipped, not delayed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

from siproc.media.codecs import AudioCodec, get_codec
from siproc.media.dtmf import DtmfReceiver, DtmfSender, GoertzelDetector
from siproc.net.rtp_state import StreamParts

__all__ = ["DtmfEdge"]


class DtmfEdge(StreamParts):
    """RFC 4733 events out and in, in-band tones in."""

    on_dtmf: Callable[[str], None] | None  # one key press received
    telephone_event_pt: int | None  # the type we send events with; None: not negotiated
    _event_pts: frozenset[int]  # telephone-event types we receive
    _event_clocks: dict[int, int]  # ... and their clock rates

    def _init_dtmf(self) -> None:
        self.on_dtmf = None
        self._dtmf_listeners: list[Callable[[str], None]] = []  # STREAM (media_stream_edge.py)
        self.telephone_event_pt = None
        self._event_pts = frozenset()
        self._event_clocks = {}
        self._dtmf_out = DtmfSender()
        self._dtmf_in = DtmfReceiver()
        self._dtmf_tones: GoertzelDetector | None = None
        self._dtmf_decoder: AudioCodec | None = None

    def add_dtmf_listener(self, listener: Callable[[str], None]) -> None:
        """Also give each received key to ``listener`` (besides ``on_dtmf``), until removed."""
        self._dtmf_listeners.append(listener)

    def remove_dtmf_listener(self, listener: Callable[[str], None]) -> None:
        with contextlib.suppress(ValueError):
            self._dtmf_listeners.remove(listener)

    def send_dtmf(self, digits: str) -> None:
        """Queue DTMF keys (``0-9 * # A-D``) to send as RFC 4733 events from the next tick
        on, after any queued before; each event's packets replace the audio frames of its
        ticks. Raises ValueError for an invalid character (then nothing is queued) or when no
        telephone-event payload type was negotiated (the call layer falls back to SIP INFO)."""
        if self._closed:
            raise RuntimeError("RtpStream.send_dtmf() after close()")
        if self.telephone_event_pt is None:
            raise ValueError("no telephone-event negotiated with the remote end")
        self._dtmf_out.queue(digits)

    def _configure_dtmf(
        self,
        codec: AudioCodec,
        audio_pt: int,
        send: tuple[int, int] | None,
        receive: Mapping[int, int],
    ) -> None:
        """RFC 4733 events in both directions when negotiated; else in-band detection (the
        detector decodes with its own codec instance when the codec has state).

        ``send`` is (payload type, clock rate) of the events we send; ``receive`` maps the
        telephone-event payload types the remote may send to their clock rates (the send type
        is one of them too). ``audio_pt`` is never taken for events.
        """
        clocks = dict(receive)
        if send is not None:
            clocks.setdefault(send[0], send[1])
            self._dtmf_out.set_clocks(send[1], codec.clock_rate)
        else:
            self._dtmf_out.clear()
        clocks.pop(audio_pt, None)
        self._event_clocks = clocks
        pts = frozenset(clocks)
        self._event_pts = pts
        if pts:
            self._dtmf_tones = self._dtmf_decoder = None
            return
        if self._dtmf_tones is None or self._dtmf_tones.sample_rate != codec.sample_rate:
            self._dtmf_tones = GoertzelDetector(codec.sample_rate)
        decoder = self._dtmf_decoder
        if not codec.stateful:
            self._dtmf_decoder = codec
        elif decoder is None or decoder is codec or decoder.name != codec.name:
            self._dtmf_decoder = get_codec(codec.name)

    def _dtmf_tones_received(self, payload: memoryview) -> None:
        """DTMF in when no telephone-event was negotiated: in-band tones in the decoded audio
        (Goertzel)."""
        tones, decoder = self._dtmf_tones, self._dtmf_decoder
        if tones is None or decoder is None:
            return
        for digit in tones.feed(decoder.decode(payload)):
            self._emit_dtmf(digit)

    def _emit_dtmf(self, digit: str) -> None:
        for listener in self._dtmf_listeners:
            try:
                listener(digit)
            except Exception:
                self.log.exception("DTMF listener %r failed", listener)
        callback = self.on_dtmf
        if callback is None:
            return
        try:
            callback(digit)
        except Exception:
            self.log.exception("on_dtmf(%r) failed", digit)

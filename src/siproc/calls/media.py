"""One call's side of offer/answer (RFC 3264): our SDP, and what a negotiation does to the
call's stream.

`CallMedia` builds our offers and answers (one SDP session id per call, its version counting
up, RFC 3264 section 8), decides whether SDES keys may go into them (SIPROC_SRTP, RFC 4568
section 8.3: only over TLS), and configures the stream from a `NegotiatedMedia`: codec (one
instance per call, so a re-INVITE that keeps the codec keeps its state), remote address,
telephone-event, direction, RTCP and SRTP. The call says where its signalling goes (``secure``)
and what the stream may trust (``latch``, ``unproven``); the decisions of when to offer or
answer are the session machines' (sip/invite_session.py, sip/session_update.py).
"""

from __future__ import annotations

from siproc.calls.services import PhoneServices
from siproc.media.codecs import AudioCodec, get_codec
from siproc.net.media_stream import MediaStream
from siproc.sdp.model import SessionDescription
from siproc.sdp.offer_answer import NegotiatedMedia, OfferAnswerError, answer_offer, build_offer
from siproc.sdp.sdes import SrtpMode

__all__ = ["INSECURE_SRTP_REASON", "UNPROVEN_PACKETS", "CallMedia"]

INSECURE_SRTP_REASON = (
    "SIPROC_SRTP=mandatory: SDES keys are sent only over TLS (a sips: or ;transport=tls path); "
    "this call's signalling is not TLS (SIPROC_SRTP_INSECURE_SIGNALLING=yes allows it)"
)
#: RTP packets (5 s) an incoming call may send before the ACK confirms the far end, unless its
#: RTP arrived first: early media to the SDP of an INVITE with a forged source stops there.
UNPROVEN_PACKETS = 250


class CallMedia:
    """Offer/answer and stream configuration of one call; see the module docstring."""

    def __init__(self, phone: PhoneServices, stream: MediaStream) -> None:
        self.phone = phone
        self.stream = stream
        self.negotiated: NegotiatedMedia | None = None
        self._codec: tuple[tuple[str, str | None], AudioCodec] | None = None  # (key, instance)
        self._sdp_version = 1
        self._sdp_session = int(phone.new_token()[:8], 16)

    def srtp_mode(self, secure: bool) -> SrtpMode:
        """SIPROC_SRTP for an SDP that goes over TLS (``secure``) or not: SDES keys are put
        into SDP only over a TLS signalling path (RFC 4568 section 8.3: they are in clear in
        the SDP), unless the user allowed otherwise (SIPROC_SRTP_INSECURE_SIGNALLING=yes).
        Over UDP or TCP, ``optional`` falls back to plain RTP and ``mandatory`` raises (488 to
        an offer)."""
        mode = self.phone.srtp
        if mode is SrtpMode.OFF or secure or self.phone.srtp_insecure_signalling:
            return mode
        if mode is SrtpMode.OPTIONAL:
            return SrtpMode.OFF
        raise OfferAnswerError(INSECURE_SRTP_REASON)

    def offer(self, address: str, *, direction: str, secure: bool) -> SessionDescription:
        """Our offer; ``direction`` sendonly/inactive puts the call on hold (RFC 3264 8.4)."""
        self._sdp_version += 1
        return build_offer(
            address=address,
            port=self.stream.local_port,
            codecs=self.phone.codecs,
            session_id=self._sdp_session,
            session_version=self._sdp_version,
            direction=direction,
            telephone_event=self.phone.telephone_event,
            srtp=self.srtp_mode(secure),
        )

    def answer(
        self, offer: SessionDescription, address: str, *, hold: bool, secure: bool
    ) -> tuple[SessionDescription, NegotiatedMedia]:
        """Our answer to ``offer`` and what it negotiates (to `configure`); ``hold``: we keep
        the call on hold."""
        self._sdp_version += 1
        return answer_offer(
            offer,
            address=address,
            port=self.stream.local_port,
            codecs=self.phone.codecs,
            session_id=self._sdp_session,
            session_version=self._sdp_version,
            telephone_event=self.phone.telephone_event,
            hold=hold,
            srtp=self.srtp_mode(secure),
        )

    def configure(self, negotiated: NegotiatedMedia, *, latch: str, unproven: bool) -> None:
        """Apply a negotiation to the stream. The first one latches the stream to ``latch``
        (the signalling source) and, when ``unproven``, limits what it sends until the ACK
        proves the far end (`UNPROVEN_PACKETS`). Raises OfferAnswerError for media the stream
        cannot use."""
        if negotiated.rejected:
            raise OfferAnswerError("the remote end rejected the audio stream (port 0)")
        first = self.negotiated is None
        self.negotiated = negotiated
        # One codec instance per call: a re-INVITE that keeps the codec keeps its state (G.722
        # and Opus encoders/decoders carry history from frame to frame).
        key = (negotiated.codec.name.upper(), negotiated.codec.fmtp)
        if self._codec is None or self._codec[0] != key:
            self._codec = (key, get_codec(negotiated.codec.name, negotiated.codec.fmtp))
        codec = self._codec[1]
        stream = self.stream
        if first and latch:
            stream.latch_from([latch])
            if unproven:
                stream.guard_unproven(UNPROVEN_PACKETS)
        try:
            stream.configure(
                negotiated.remote_address,
                codec,
                negotiated.codec.payload_type,
                negotiated.telephone_event_pt,
                negotiated.direction,
                telephone_event_rate=negotiated.telephone_event_rate,
                receive_telephone_events=negotiated.receive_telephone_events,
            )
        except OfferAnswerError:
            raise
        except ValueError as exc:  # the peer's media the stream cannot use (address family)
            raise OfferAnswerError(f"unusable media: {exc}") from None
        stream.configure_rtcp(mux=negotiated.rtcp_mux, remote=negotiated.remote_rtcp)
        stream.configure_srtp(negotiated.srtp)

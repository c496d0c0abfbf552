"""Dialogs (RFC 3261 section 12): the state two user agents share for the life of a call.

Theory of operation: a dialog is made from the INVITE and its 2xx (or 1xx with a To tag, for
early dialogs). It holds the Call-ID and both tags (the dialog id), the route set (from
Record-Route: reversed on the UAC side, section 12.1.2), the remote target (the peer's Contact,
refreshed by re-INVITE, section 12.2), and both CSeq counters. `create_request()` builds an
in-dialog request per section 12.2.1.1, including the loose/strict routing rules of section
16.12.1.1 and 8.1.2; `check_request()` applies the CSeq rule of section 12.2.2.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import Enum

from siproc.sip.errors import LocalProtocolError, ParseError, RemoteProtocolError
from siproc.sip.headers import CSeq, MessageInfo, keep_info, message_info, remember_name_addr
from siproc.sip.message import Headers, Request, Response
from siproc.sip.uri import NameAddr, SipUri, parse_name_addr, parse_name_addr_list

log = logging.getLogger(__name__)


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


_TRANSITIONS = {
    DialogState.EARLY: {DialogState.CONFIRMED, DialogState.TERMINATED},
    DialogState.CONFIRMED: {DialogState.TERMINATED},
    DialogState.TERMINATED: set[DialogState](),
}


def _contact_uri(headers: Headers) -> SipUri | None:
    contacts = headers.get_all("Contact")
    if not contacts:
        return None
    uri = parse_name_addr(contacts[0]).uri
    if not isinstance(uri, SipUri):
        raise RemoteProtocolError(416, "Unsupported URI Scheme in Contact")
    return uri


def _route_set(headers: Headers) -> list[NameAddr]:
    return [na for value in headers.get_raw("Record-Route") for na in parse_name_addr_list(value)]


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local: NameAddr  # our From (UAC) / To (UAS), without tag
    remote: NameAddr
    remote_target: SipUri
    route_set: list[NameAddr]
    local_cseq: int
    remote_cseq: int | None
    state: DialogState = DialogState.EARLY
    secure: bool = False

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    def set_state(self, new: DialogState) -> None:
        if new is self.state:
            return
        if new not in _TRANSITIONS[self.state]:
            raise LocalProtocolError(
                f"dialog {self.call_id}: illegal {self.state.value} -> {new.value}"
            )
        log.debug("dialog %s: %s -> %s", self.call_id, self.state.value, new.value)
        self.state = new

    # -- creation -------------------------------------------------------------------------------

    @classmethod
    def from_uac(cls, request: Request, response: Response) -> Dialog:
        """The UAC's dialog from its INVITE and a 2xx/1xx with To tag (section 12.1.2)."""
        info = message_info(response)
        req_info = message_info(request)
        if not info.to.tag or not req_info.from_.tag:
            raise RemoteProtocolError(400, "Bad Request (no To tag in dialog-creating response)")
        target = _contact_uri(response.headers)
        if target is None:
            raise RemoteProtocolError(400, "Bad Request (no Contact in dialog-creating response)")
        routes = list(reversed(_route_set(response.headers)))
        dialog = cls(
            call_id=req_info.call_id,
            local_tag=req_info.from_.tag,
            remote_tag=info.to.tag,
            local=req_info.from_.without_params("tag"),
            remote=info.to.without_params("tag"),
            remote_target=target,
            route_set=routes,
            local_cseq=req_info.cseq.number,
            remote_cseq=None,
        )
        if 200 <= response.status < 300:
            dialog.set_state(DialogState.CONFIRMED)
        return dialog

    @classmethod
    def from_uas(cls, request: Request, local_tag: str) -> Dialog:
        """The UAS's dialog from a received INVITE (section 12.1.1)."""
        info = message_info(request)
        target = _contact_uri(request.headers)
        if target is None:
            raise RemoteProtocolError(400, "Bad Request (INVITE without Contact)")
        return cls(
            call_id=info.call_id,
            local_tag=local_tag,
            remote_tag=info.from_.tag or "",
            local=info.to.without_params("tag"),
            remote=info.from_.without_params("tag"),
            remote_target=target,
            route_set=_route_set(request.headers),
            local_cseq=0,
            remote_cseq=info.cseq.number,
        )

    # -- in-dialog requests ---------------------------------------------------------------------

    def next_cseq(self) -> int:
        self.local_cseq += 1
        return self.local_cseq

    def create_request(self, method: str, *, cseq: int | None = None) -> Request:
        """An in-dialog request without Via (the endpoint adds it) (section 12.2.1.1).

        ACK and CANCEL reuse the INVITE's CSeq number: pass `cseq`.
        """
        number = cseq if cseq is not None else self.next_cseq()
        headers = Headers()
        uri: SipUri = self.remote_target
        routes = list(self.route_set)
        if routes and isinstance(routes[0].uri, SipUri) and routes[0].uri.param("lr") is None:
            # Strict router (section 12.2.1.1): it goes into the Request-URI, the remote target
            # becomes the last Route. Only "method" and URI headers are not allowed in a
            # Request-URI (section 19.1.1, table 1): transport, maddr and the rest stay.
            first = routes.pop(0)
            assert isinstance(first.uri, SipUri)
            uri = replace(first.uri.without_params("method"), headers=())
            routes.append(NameAddr(self.remote_target))
        for route in routes:
            headers.add("Route", str(route))
        headers.add("Max-Forwards", "70")
        local = self.local.with_params(tag=self.local_tag)
        headers.add("From", remember_name_addr(local))
        remote = self.remote.with_params(tag=self.remote_tag) if self.remote_tag else self.remote
        headers.add("To", remember_name_addr(remote))
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{number} {method}")
        request = Request(method, str(uri), headers)
        # The values just written, as parsing them back gives them (the Via comes with
        # Endpoint.add_via): the BYE's client transaction does not parse our own headers.
        keep_info(request, MessageInfo(self.call_id, CSeq(number, method), local, remote, (), 70))
        return request

    def next_hop(self) -> SipUri:
        """Where an in-dialog request goes: the first route, else the remote target (8.1.2)."""
        if self.route_set and isinstance(self.route_set[0].uri, SipUri):
            return self.route_set[0].uri
        return self.remote_target

    def check_request(self, request: Request, info: MessageInfo | None = None) -> None:
        """Apply the remote CSeq rule (section 12.2.2) and refresh the target on re-INVITE.

        Raises RemoteProtocolError(500) for a request with a lower CSeq than the last one.
        ACK and CANCEL carry the INVITE's CSeq and are exempt.
        """
        info = info or message_info(request)
        number = info.cseq.number
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_cseq is not None and number <= self.remote_cseq:
                raise RemoteProtocolError(500, "Server Internal Error (CSeq out of order)")
            self.remote_cseq = number
        if request.method in ("INVITE", "UPDATE"):
            try:
                target = _contact_uri(request.headers)
            except ParseError:
                target = None
            if target is not None:
                self.remote_target = target

    def update_from_response(self, response: Response) -> None:
        """A 2xx to a re-INVITE refreshes the remote target (section 12.2.1.2)."""
        try:
            target = _contact_uri(response.headers)
        except (ParseError, RemoteProtocolError):
            return
        if target is not None:
            self.remote_target = target

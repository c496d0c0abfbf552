"""The REGISTER client of RFC 3261 section 10.2, driven directly with responses and `now`."""

from __future__ import annotations

import re

import pytest

from siproc.sip.auth import Challenge, DigestSession, compute_response
from siproc.sip.errors import LocalProtocolError
from siproc.sip.headers import make_response, message_info
from siproc.sip.message import Request, Response
from siproc.sip.registration import (
    REFRESH_MARGIN,
    RETRY_MAX,
    RETRY_MIN,
    Failed,
    Registered,
    Registration,
    RegistrationState,
    SendAgain,
    Unregistered,
)
from siproc.sip.uri import SipUri, parse_name_addr, parse_sip_uri

S = RegistrationState
REGISTRAR = parse_sip_uri("sip:pbx.example.com")
AOR = parse_name_addr('"Alice" <sip:alice@pbx.example.com>')
CONTACT = parse_sip_uri("sip:alice@192.168.1.10:5060")
VIA = "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKreg{n};rport"
CHALLENGE = 'Digest realm="pbx", nonce="{nonce}", qop="auth", algorithm=MD5'
_PARAM_RE = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]+))')


def make_registration(
    *,
    password: str | None = "secret",
    registrar: SipUri = REGISTRAR,
    contact: SipUri = CONTACT,
    expires: int = 600,
    rewrite_contact: bool = True,
    instance: str | None = None,
) -> Registration:
    auth = (
        None
        if password is None
        else DigestSession("alice", password, cnonce_factory=lambda: "0a4f113b")
    )
    reg = Registration(
        registrar=registrar,
        aor=AOR,
        contact=contact,
        expires=expires,
        call_id="reg-1@192.168.1.10",
        from_tag="ftag1",
        auth=auth,
        rewrite_contact=rewrite_contact,
        instance=instance,
    )
    reg.start()
    return reg


def answer(
    request: Request,
    status: int,
    reason: str = "",
    *,
    via: str | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> Response:
    """A registrar's response to `request` (which has no Via of its own yet: add one)."""
    request.headers.prepend("Via", via or VIA.format(n=cseq(request)[0]))
    response = make_response(
        request, status, reason or str(status), to_tag="reg-tag", headers=headers or []
    )
    request.headers.remove("Via")
    return response


def challenge(request: Request, nonce: str = "n1", status: int = 401) -> Response:
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    return answer(request, status, headers=[(header, CHALLENGE.format(nonce=nonce))])


def digest_params(value: str) -> dict[str, str]:
    assert value.startswith("Digest ")
    return {m[1]: m[2] if m[2] is not None else m[3] for m in _PARAM_RE.finditer(value[7:])}


def assert_valid_digest(request: Request, nonce: str, nc: int, password: str = "secret") -> None:
    """The Authorization header answers CHALLENGE for this REGISTER (RFC 2617 section 3.2.2)."""
    params = digest_params(request.headers.get("Authorization") or "")
    assert params["username"] == "alice" and params["realm"] == "pbx"
    assert params["nonce"] == nonce and params["uri"] == request.uri
    assert params["nc"] == f"{nc:08x}" and params["qop"] == "auth"
    expected = compute_response(
        Challenge("Digest", "pbx", nonce, "MD5", ("auth",)),
        method="REGISTER",
        uri=request.uri,
        username="alice",
        password=password,
        cnonce=params["cnonce"],
        nc=nc,
    )
    assert params["response"] == expected


def cseq(request: Request) -> tuple[int, str]:
    number, method = (request.headers.get("CSeq") or "").split()
    return int(number), method


# -- the REGISTER request (section 10.2) -------------------------------------------------------


def test_first_register_has_the_section_10_2_headers() -> None:
    reg = make_registration()
    assert reg.state is S.REGISTERING
    req = reg.build_request()
    assert req.method == "REGISTER" and req.uri == "sip:pbx.example.com"
    assert "Via" not in req.headers  # the endpoint adds it
    assert req.headers.get("To") == '"Alice" <sip:alice@pbx.example.com>'  # the AOR, no tag
    assert req.headers.get("From") == '"Alice" <sip:alice@pbx.example.com>;tag=ftag1'
    assert req.headers.get("Call-ID") == "reg-1@192.168.1.10"
    assert req.headers.get("CSeq") == "1 REGISTER"
    assert req.headers.get("Contact") == "<sip:alice@192.168.1.10:5060>;expires=600"
    assert req.headers.get("Expires") == "600"
    assert req.headers.get("Max-Forwards") == "70"
    assert "INVITE" in (req.headers.get("Allow") or "")
    assert "Authorization" not in req.headers  # nothing to answer before a challenge
    req.headers.prepend("Via", VIA.format(n=1))
    info = message_info(req)  # well formed as a whole
    assert info.from_.tag == "ftag1" and info.to.tag is None


def test_call_id_stays_and_cseq_counts_up_across_requests() -> None:
    reg = make_registration()
    first = reg.build_request()
    assert isinstance(reg.on_response(challenge(first), 0.0), SendAgain)
    second = reg.build_request()
    assert isinstance(reg.on_response(answer(second, 200), 0.1), Registered)
    refresh = reg.build_request()
    assert reg.state is S.REGISTERING
    requests = [first, second, refresh]
    assert {r.headers.get("Call-ID") for r in requests} == {"reg-1@192.168.1.10"}
    assert {r.headers.get("From") for r in requests} == {first.headers.get("From")}
    assert [cseq(r) for r in requests] == [(1, "REGISTER"), (2, "REGISTER"), (3, "REGISTER")]


def test_request_uri_drops_userinfo_and_udp_transport_but_keeps_tcp() -> None:
    # Section 10.2: "the userinfo and '@' components of the SIP URI MUST NOT be present".
    reg = make_registration(registrar=parse_sip_uri("sip:alice@pbx.example.com:5080"))
    assert reg.build_request().uri == "sip:pbx.example.com:5080"
    reg = make_registration(registrar=parse_sip_uri("sip:pbx.example.com;transport=UDP"))
    assert reg.build_request().uri == "sip:pbx.example.com"
    reg = make_registration(registrar=parse_sip_uri("sip:pbx.example.com;transport=tcp"))
    assert reg.build_request().uri == "sip:pbx.example.com;transport=tcp"


# -- digest authentication (section 22) ---------------------------------------------------------


def test_401_is_answered_with_authorization_and_a_new_cseq() -> None:
    reg = make_registration()
    first = reg.build_request()
    result = reg.on_response(challenge(first, "n1"), 10.0)
    assert result == SendAgain("401 challenge answered")
    assert reg.state is S.REGISTERING
    second = reg.build_request()
    assert cseq(second) == (2, "REGISTER")  # section 8.1.3.5: a new request, CSeq + 1
    assert_valid_digest(second, "n1", nc=1)
    result = reg.on_response(answer(second, 200), 10.2)
    assert isinstance(result, Registered) and reg.state is S.REGISTERED
    # The refresh reuses the challenge (section 22.3) with the next nonce count.
    refresh = reg.build_request()
    assert_valid_digest(refresh, "n1", nc=2)


def test_407_is_answered_with_proxy_authorization() -> None:
    reg = make_registration()
    first = reg.build_request()
    assert reg.on_response(challenge(first, "p1", status=407), 0.0) == SendAgain(
        "407 challenge answered"
    )
    second = reg.build_request()
    assert "Authorization" not in second.headers
    assert digest_params(second.headers.get("Proxy-Authorization") or "")["nonce"] == "p1"


def test_wrong_password_fails_with_one_line_and_backs_off_to_15_minutes() -> None:
    reg = make_registration(password="wrong")
    req = reg.build_request()
    assert isinstance(reg.on_response(challenge(req, "n1"), 0.0), SendAgain)
    now = 0.0
    delays: list[float] = []
    for attempt in range(8):
        req = reg.build_request()
        assert reg.state is S.REGISTERING
        assert "Authorization" in req.headers
        result = reg.on_response(challenge(req, "n1"), now)  # the same nonce: rejected
        assert isinstance(result, Failed), attempt
        assert "wrong username or password" in result.reason
        assert "\n" not in result.reason and "'alice'" in result.reason
        assert reg.state is S.FAILED and result.retry_at is not None
        delays.append(result.retry_at - now)
        now = result.retry_at
    assert delays == [30, 60, 120, 240, 480, 900, 900, 900]
    assert RETRY_MIN == 30 and RETRY_MAX == 900


def test_a_new_nonce_every_time_is_also_a_wrong_password() -> None:
    reg = make_registration(password="wrong")
    req = reg.build_request()
    assert isinstance(reg.on_response(challenge(req, "n1"), 0.0), SendAgain)
    req = reg.build_request()
    assert isinstance(reg.on_response(challenge(req, "n2"), 0.1), SendAgain)  # maybe expired
    req = reg.build_request()
    result = reg.on_response(challenge(req, "n3"), 0.2)
    assert isinstance(result, Failed) and "wrong username or password" in result.reason
    assert result.retry_at == pytest.approx(30.2)


def test_success_resets_the_backoff() -> None:
    reg = make_registration()
    result = reg.on_timeout(5.0)
    assert isinstance(result, Failed) and result.retry_at == 35.0
    result = reg.on_timeout(35.0)
    assert isinstance(result, Failed) and result.retry_at == 95.0
    req = reg.build_request()
    assert isinstance(reg.on_response(answer(req, 200), 95.0), Registered)
    assert reg.failures == 0
    reg.build_request()
    result = reg.on_timeout(700.0)
    assert isinstance(result, Failed) and result.retry_at == 730.0


def test_401_without_a_password_says_to_set_one() -> None:
    reg = make_registration(password=None)
    req = reg.build_request()
    result = reg.on_response(challenge(req), 1.0)
    assert isinstance(result, Failed) and "SIPROC_PASSWORD" in result.reason
    assert result.retry_at == 31.0


def test_401_without_a_usable_challenge_fails() -> None:
    reg = make_registration()
    req = reg.build_request()
    response = answer(req, 401, headers=[("WWW-Authenticate", 'Basic realm="x"')])
    result = reg.on_response(response, 0.0)
    assert isinstance(result, Failed) and "no usable Digest challenge" in result.reason


# -- 423 Interval Too Brief (section 10.2.8) ----------------------------------------------------


def test_423_raises_expires_to_min_expires() -> None:
    reg = make_registration(expires=60)
    req = reg.build_request()
    result = reg.on_response(answer(req, 423, headers=[("Min-Expires", "3600")]), 0.0)
    assert result == SendAgain("423: expiry raised to Min-Expires 3600")
    again = reg.build_request()
    assert again.headers.get("Expires") == "3600"
    assert again.headers.get("Contact") == "<sip:alice@192.168.1.10:5060>;expires=3600"
    assert cseq(again) == (2, "REGISTER")


@pytest.mark.parametrize("min_expires", [None, "soon", "600", "30"])
def test_423_without_a_higher_min_expires_fails(min_expires: str | None) -> None:
    reg = make_registration(expires=600)
    req = reg.build_request()
    headers = [] if min_expires is None else [("Min-Expires", min_expires)]
    result = reg.on_response(answer(req, 423, headers=headers), 0.0)
    assert isinstance(result, Failed) and result.reason.startswith("423")
    assert reg.expires == 600


# -- 2xx: the granted expiry and the refresh (section 10.2.4) -----------------------------------


def test_200_contact_expires_gives_registered_with_an_early_refresh() -> None:
    reg = make_registration()
    req = reg.build_request()
    contacts = (
        "<sip:alice@10.9.9.9:5060>;expires=50, "  # another device of the same AOR
        "<sip:alice@192.168.1.10:5060>;expires=300"
    )
    response = answer(req, 200, headers=[("Contact", contacts), ("Expires", "999")])
    result = reg.on_response(response, 100.0)
    assert result == Registered(300, 100.0 + 300 - REFRESH_MARGIN)
    assert reg.state is S.REGISTERED


def test_granted_expiry_falls_back_to_expires_then_to_the_request() -> None:
    reg = make_registration()
    req = reg.build_request()
    result = reg.on_response(answer(req, 200, headers=[("Expires", "120")]), 0.0)
    assert result == Registered(120, 60.0)
    req = reg.build_request()
    result = reg.on_response(answer(req, 200), 1000.0)
    assert result == Registered(600, 1540.0)


def test_short_expiry_refreshes_at_half_time() -> None:
    reg = make_registration()
    req = reg.build_request()
    response = answer(req, 200, headers=[("Contact", "<sip:alice@192.168.1.10:5060>;expires=40")])
    result = reg.on_response(response, 0.0)
    assert result == Registered(40, 20.0)  # well before expiry, even when short


# -- NAT: the registrar's view of our address (RFC 3581 section 4) ------------------------------


def test_received_and_rport_rewrite_the_contact_and_register_again() -> None:
    reg = make_registration()
    req = reg.build_request()
    nat_via = "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKreg1;rport=40123;received=203.0.113.7"
    result = reg.on_response(answer(req, 200, via=nat_via), 0.0)
    assert result == SendAgain("registrar sees us at 203.0.113.7:40123")
    assert reg.state is S.REGISTERING
    again = reg.build_request()
    assert again.headers.get("Contact") == "<sip:alice@203.0.113.7:40123>;expires=600"
    assert cseq(again) == (2, "REGISTER")
    # The registrar now sees what we advertise: registered.
    echo = [("Contact", "<sip:alice@203.0.113.7:40123>;expires=600")]
    result = reg.on_response(answer(again, 200, via=nat_via, headers=echo), 0.1)
    assert result == Registered(600, 540.1)
    assert reg.contact == SipUri("sip", "203.0.113.7", "alice", port=40123)


def test_rport_alone_rewrites_the_port() -> None:
    reg = make_registration()
    req = reg.build_request()
    via = "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKreg1;rport=5099"
    assert reg.on_response(answer(req, 200, via=via), 0.0) == SendAgain(
        "registrar sees us at 192.168.1.10:5099"
    )


def test_matching_via_or_rewrite_off_registers_at_once() -> None:
    reg = make_registration()
    req = reg.build_request()
    same = "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKreg1;rport=5060"
    assert isinstance(reg.on_response(answer(req, 200, via=same), 0.0), Registered)
    # A Contact without a port is at 5060 (RFC 3261 section 19.1.2): rport=5060 is no change.
    reg = make_registration(contact=parse_sip_uri("sip:alice@192.168.1.10"))
    req = reg.build_request()
    assert isinstance(reg.on_response(answer(req, 200, via=same), 0.0), Registered)
    reg = make_registration(rewrite_contact=False)  # SIPROC_PUBLIC_ADDRESS is set
    req = reg.build_request()
    nat = "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKreg1;rport=40123;received=203.0.113.7"
    assert isinstance(reg.on_response(answer(req, 200, via=nat), 0.0), Registered)
    assert reg.contact == CONTACT


def test_an_absurd_rport_is_ignored() -> None:
    reg = make_registration()
    req = reg.build_request()
    via = "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKreg1;rport=99999"
    assert isinstance(reg.on_response(answer(req, 200, via=via), 0.0), Registered)


# -- failures --------------------------------------------------------------------------------


def test_timeout_fails_and_retries_later() -> None:
    reg = make_registration()
    reg.build_request()
    result = reg.on_timeout(3.0)
    assert result == Failed("no answer from the registrar (timeout)", 33.0)
    assert reg.state is S.FAILED
    again = reg.build_request()  # the retry
    assert reg.state is S.REGISTERING and cseq(again) == (2, "REGISTER")


def test_transport_error_and_other_statuses_fail() -> None:
    reg = make_registration()
    reg.build_request()
    result = reg.on_transport_error("connection refused", 0.0)
    assert isinstance(result, Failed) and "connection refused" in result.reason
    req = reg.build_request()
    result = reg.on_response(answer(req, 403, "Forbidden"), 30.0)
    assert result == Failed("403 Forbidden", 90.0)


# -- un-registering (section 10.2.2) ------------------------------------------------------------


def registered() -> Registration:
    reg = make_registration()
    req = reg.build_request()
    assert isinstance(reg.on_response(answer(req, 200), 0.0), Registered)
    return reg


def test_stop_sends_expires_0_then_unregistered() -> None:
    reg = registered()
    assert reg.stop() is True
    assert reg.state is S.UNREGISTERING
    req = reg.build_request()
    assert req.headers.get("Expires") == "0"
    assert req.headers.get("Contact") == "<sip:alice@192.168.1.10:5060>;expires=0"
    assert cseq(req) == (2, "REGISTER")
    assert reg.on_response(answer(req, 200), 5.0) == Unregistered(200)
    assert reg.state is S.UNREGISTERED
    assert reg.stop() is False  # nothing left to remove


def test_unregister_answers_a_challenge() -> None:
    reg = registered()
    reg.stop()
    req = reg.build_request()
    assert reg.on_response(challenge(req, "n9"), 1.0) == SendAgain("401 challenge answered")
    again = reg.build_request()
    assert again.headers.get("Expires") == "0"
    assert_valid_digest(again, "n9", nc=1)
    assert reg.on_response(answer(again, 200), 1.1) == Unregistered(200)


def test_unregister_timeout_or_error_still_ends() -> None:
    reg = registered()
    reg.stop()
    reg.build_request()
    assert reg.on_timeout(32.0) == Unregistered(408)
    reg = registered()
    reg.stop()
    reg.build_request()
    assert reg.on_transport_error("refused", 0.0) == Unregistered(503)
    reg = registered()
    reg.stop()
    req = reg.build_request()
    assert reg.on_response(answer(req, 500), 0.0) == Unregistered(500)


def test_stop_while_the_first_register_is_in_flight() -> None:
    reg = make_registration()
    first = reg.build_request()
    assert reg.stop() is True  # it may be bound already: remove it
    unregister = reg.build_request()
    assert unregister.headers.get("Expires") == "0"
    # The answer to the first REGISTER arrives first; then the one to the un-REGISTER.
    assert reg.on_response(answer(first, 200), 0.1) == Unregistered(200)
    assert reg.on_response(answer(unregister, 200), 0.2) == Unregistered(200)
    assert reg.state is S.UNREGISTERED


def test_stop_before_start_or_after_failure_sends_nothing() -> None:
    reg = Registration(
        registrar=REGISTRAR,
        aor=AOR,
        contact=CONTACT,
        expires=600,
        call_id="c",
        from_tag="t",
        auth=None,
    )
    assert reg.stop() is False and reg.state is S.UNREGISTERED
    reg = make_registration()
    reg.build_request()
    reg.on_timeout(0.0)
    assert reg.stop() is False


def test_illegal_use_raises_local_protocol_error() -> None:
    reg = registered()
    reg.stop()
    req = reg.build_request()
    reg.on_response(answer(req, 200), 0.0)
    with pytest.raises(LocalProtocolError, match="unregistered -> registering"):
        reg.build_request()
    reg = make_registration()
    with pytest.raises(LocalProtocolError, match="illegal"):
        reg._set_state(S.UNREGISTERED)


# -- a registrar that cannot be reached (DNS, TCP) ----------------------------------------------


def test_retry_min_sets_the_first_step_of_the_backoff() -> None:
    reg = Registration(
        registrar=REGISTRAR,
        aor=AOR,
        contact=CONTACT,
        expires=600,
        call_id="c",
        from_tag="f",
        auth=None,
        retry_min=2.0,
    )
    reg.start()
    steps = [reg.on_transport_error("cannot resolve 'pbx'", 100.0) for _ in range(12)]
    assert [s.retry_at for s in steps if isinstance(s, Failed)][:4] == [102.0, 104.0, 108.0, 116.0]
    reason = "cannot reach the registrar: cannot resolve 'pbx'"
    assert steps[-1] == Failed(reason, 100.0 + RETRY_MAX)
    with pytest.raises(LocalProtocolError):
        Registration(
            registrar=REGISTRAR,
            aor=AOR,
            contact=CONTACT,
            expires=600,
            call_id="c",
            from_tag="f",
            auth=None,
            retry_min=0.0,
        )


def test_a_refresh_that_cannot_go_out_fails_and_backs_off() -> None:
    reg = make_registration(password=None)
    req = reg.build_request()
    assert isinstance(reg.on_response(answer(req, 200), 0.0), Registered)
    # The refresh could not even be sent (no address for the registrar): not an illegal
    # registered -> failed, but a failed attempt retried like any other.
    result = reg.on_transport_error("cannot resolve 'pbx.example.com'", 540.0)
    assert result == Failed(
        "cannot reach the registrar: cannot resolve 'pbx.example.com'", 540.0 + RETRY_MIN
    )
    assert reg.state is S.FAILED
    assert reg.stop() is False and reg.state is S.UNREGISTERING
    assert reg.on_transport_error("gone", 600.0) == Unregistered(503)
    assert reg.on_transport_error("gone", 601.0) == Unregistered(503)


# -- hostile registrar responses: numbers int() cannot take ---------------------------------------


@pytest.mark.parametrize(
    "value", ["9" * 5000, "\u00b2", "4294967296"], ids=["5000-digits", "superscript", "2**32"]
)
def test_unusable_contact_expires_falls_back_to_the_request(value: str) -> None:
    """A 5000-digit (or superscript, or out of range) expires parameter is ignored: it once
    escaped as a ValueError from int()."""
    reg = make_registration()
    req = reg.build_request()
    contact = f"<sip:alice@192.168.1.10:5060>;expires={value}"
    result = reg.on_response(answer(req, 200, headers=[("Contact", contact)]), 0.0)
    assert result == Registered(600, 540.0)


def test_huge_rport_is_ignored() -> None:
    reg = make_registration()
    req = reg.build_request()
    via = f"SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKreg1;rport={'9' * 5000}"
    assert reg.on_response(answer(req, 200, via=via), 0.0) == Registered(600, 540.0)


INSTANCE = "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e"


def test_instance_id_goes_into_every_contact_and_the_200_still_matches() -> None:
    """RFC 5626 section 4.1: +sip.instance on the registered Contact (refresh, un-REGISTER
    alike), so that a registrar keeps one binding per instance of the account."""
    reg = make_registration(instance=INSTANCE)
    req = reg.build_request()
    assert req.headers.get("Contact") == (
        f'<sip:alice@192.168.1.10:5060>;+sip.instance="<{INSTANCE}>";expires=600'
    )
    echo = f'<sip:alice@192.168.1.10:5060>;+sip.instance="<{INSTANCE}>";expires=300'
    result = reg.on_response(answer(req, 200, headers=[("Contact", echo)]), 0.0)
    assert result == Registered(300, 300 - REFRESH_MARGIN)
    assert reg.stop() is True
    assert reg.build_request().headers.get("Contact") == (
        f'<sip:alice@192.168.1.10:5060>;+sip.instance="<{INSTANCE}>";expires=0'
    )


def test_an_instance_that_is_no_urn_uuid_is_a_bug() -> None:
    with pytest.raises(LocalProtocolError, match="urn:uuid"):
        make_registration(instance="0f8fad5b-d9cb-469f-a165-70867728950e")

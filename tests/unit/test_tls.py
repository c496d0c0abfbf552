"""net/tls.py: the client and server contexts, the errors that name the variable, and how
ssl failures read; plus the transport's rule for reusing a TLS connection."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from siproc.net.sip_transport import SipTransport, _StreamConnection, _verified_for
from siproc.net.tls import TlsFileError, client_context, describe_ssl_error, server_context
from siproc.sip.transaction import Destination
from tests.tls_certs import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_client_context_verifies_certificate_and_name_by_default(pki: Pki) -> None:
    ctx = client_context(str(pki.ca))
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in ctx.get_ca_certs()] == [
        ((("organizationName", "siproc tests"),), (("commonName", "siproc test CA"),))
    ]
    system = client_context()  # the system store: verifying too
    assert system.verify_mode is ssl.CERT_REQUIRED and system.check_hostname


def test_verify_no_checks_neither_certificate_nor_name(pki: Pki) -> None:
    ctx = client_context(str(pki.ca), verify=False)
    assert ctx.verify_mode is ssl.CERT_NONE and not ctx.check_hostname


@pytest.mark.parametrize(
    ("name", "problem"),
    [("missing", "no such file"), ("directory", "is a directory"), ("text", "not a PEM")],
)
def test_an_unusable_ca_file_names_the_variable(tmp_path: Path, name: str, problem: str) -> None:
    path = {"missing": tmp_path / "nope.pem", "directory": tmp_path, "text": tmp_path / "t"}[name]
    if name == "text":
        path.write_text("hello\n")
    with pytest.raises(TlsFileError) as info:
        client_context(str(path))
    assert info.value.variable == "SIPROC_TLS_CA_FILE"
    assert problem in str(info.value) and "\n" not in str(info.value)


def test_server_context_loads_the_chain_and_names_the_bad_file(pki: Pki, tmp_path: Path) -> None:
    server_context(str(pki.cert), str(pki.key))
    with pytest.raises(TlsFileError) as info:
        server_context(str(tmp_path / "none.pem"), str(pki.key))
    assert info.value.variable == "SIPROC_TLS_CERT_FILE" and "no such file" in str(info.value)
    other = make_pki(tmp_path / "other")
    with pytest.raises(TlsFileError) as info:  # a key that is not the certificate's
        server_context(str(pki.cert), str(other.key))
    assert info.value.variable == "SIPROC_TLS_KEY_FILE"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(TlsFileError) as info:
        server_context(str(garbage), str(pki.key))
    assert info.value.variable == "SIPROC_TLS_CERT_FILE"


def test_describe_ssl_error_is_one_readable_line() -> None:
    exc = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] ...")
    exc.verify_message = "unable to get local issuer certificate"
    assert describe_ssl_error(exc) == (
        "certificate verify failed: unable to get local issuer certificate"
    )
    other = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    other.reason = "WRONG_VERSION_NUMBER"
    other.library = "SSL"
    assert describe_ssl_error(other) == "wrong version number (SSL)"


def test_a_tls_connection_is_reused_only_for_the_name_it_was_verified_for() -> None:
    async def main() -> None:
        owner = SipTransport(asyncio.get_running_loop(), lambda *a: None, lambda *a: None)
        pbx = Destination("tls", "192.0.2.1", 5061, "pbx.example")
        conn = _StreamConnection(owner, pbx, "tls")
        assert _verified_for(conn, Destination("tls", "192.0.2.1", 5061, "pbx.example"))
        assert not _verified_for(conn, Destination("tls", "192.0.2.1", 5061, "evil.example"))
        assert not _verified_for(conn, Destination("tls", "192.0.2.1", 5061))
        accepted = _StreamConnection(owner, None, "tls")  # a peer connected to us
        assert _verified_for(accepted, Destination("tls", "192.0.2.1", 40000))  # responses
        assert not _verified_for(accepted, pbx)  # never checked as pbx.example
        assert _verified_for(_StreamConnection(owner, None), pbx)  # TCP: no names

    asyncio.run(main())

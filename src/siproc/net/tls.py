"""TLS for SIP (RFC 3261 section 26.2, RFC 5922, RFC 5630): the standard library's `ssl`.

Theory of operation. Two contexts, built once at start:

- the client context (:func:`client_context`) verifies every server certificate against the
  system's CA store, or against ``SIPROC_TLS_CA_FILE`` alone when it is set, and checks that the
  certificate names the server (RFC 5922 section 7.2: the host of the URI being resolved, not the
  SRV target, which DNS without DNSSEC could forge; an IP literal is matched against an IP
  subjectAltName). Only ``SIPROC_TLS_VERIFY=no`` turns both checks off; the connection is still
  encrypted, never plaintext.
- the server context (:func:`server_context`), with ``SIPROC_TLS_CERT_FILE`` and
  ``SIPROC_TLS_KEY_FILE``, serves our certificate to peers that connect to SIPROC_TLS_PORT; it
  does not ask peers for certificates (phones rarely have one; digest authentication and the
  inbound policy decide who may do what).

Both require TLS 1.2 or later (RFC 8996 deprecates 1.0 and 1.1) with OpenSSL's default ciphers.
:func:`describe_ssl_error` turns an `ssl` exception into one line a user can act on ("certificate
verify failed: unable to get local issuer certificate"), since ``str()`` of those is a tuple and
their ``errno`` is OpenSSL's, not the system's.
"""

from __future__ import annotations

import ssl
from typing import Final

from siproc.config import DEFAULT_TLS_PORT, TlsSettings

__all__ = [
    "DEFAULT_TLS_PORT",
    "TlsFileError",
    "check_files",
    "client_context",
    "describe_ssl_error",
    "server_context",
]

MINIMUM_VERSION: Final = ssl.TLSVersion.TLSv1_2  # RFC 8996


class TlsFileError(Exception):
    """A certificate, key or CA file that cannot be used; ``variable`` names the setting."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def client_context(ca_file: str | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """The context for connections we open: verify the server against ``ca_file`` (PEM) or
    the system store, and its name; ``verify=False`` checks neither (SIPROC_TLS_VERIFY=no).
    Raises TlsFileError naming SIPROC_TLS_CA_FILE when that file is unusable."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    ctx.minimum_version = MINIMUM_VERSION
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsFileError("SIPROC_TLS_CA_FILE", _file_problem(ca_file, exc)) from None
        if not ctx.get_ca_certs():
            raise TlsFileError("SIPROC_TLS_CA_FILE", f"{ca_file}: no CA certificate in it")
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The context of our TLS listener: our certificate chain (PEM, leaf first) and its key.
    Raises TlsFileError naming the variable of the file that is unusable."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION
    for variable, path in (("SIPROC_TLS_CERT_FILE", cert_file), ("SIPROC_TLS_KEY_FILE", key_file)):
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as exc:
            raise TlsFileError(variable, _file_problem(path, exc)) from None
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        # OpenSSL says which half it choked on: PEM lib (the certificate), KEY_VALUES_MISMATCH...
        text = describe_ssl_error(exc)
        variable = "SIPROC_TLS_KEY_FILE" if "KEY" in text.upper() else "SIPROC_TLS_CERT_FILE"
        path = key_file if variable == "SIPROC_TLS_KEY_FILE" else cert_file
        raise TlsFileError(variable, f"{path}: not a usable PEM certificate/key ({text})") from None
    return ctx


def check_files(settings: TlsSettings) -> None:
    """Load the files of ``settings`` once, so that a bad one is an error at start (the CLI
    calls this right after `load_config`); raises TlsFileError naming the variable. The system
    CA store needs no check (and takes tens of ms to load)."""
    if settings.ca_file:
        client_context(settings.ca_file, verify=settings.verify)
    if settings.cert_file and settings.key_file:
        server_context(settings.cert_file, settings.key_file)


def describe_ssl_error(exc: BaseException) -> str:
    """One line for an `ssl` failure (handshake, verification, files)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        library = exc.library or ""
        if reason:
            text = reason.replace("_", " ").lower()
            return f"{text} ({library})" if library else text
        return str(exc.args[1] if len(exc.args) > 1 else exc)
    return str(exc)


def _file_problem(path: str, exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"{path}: no such file"
    if isinstance(exc, PermissionError):
        return f"{path}: permission denied"
    if isinstance(exc, IsADirectoryError):
        return f"{path}: is a directory"
    if isinstance(exc, ssl.SSLError):
        return f"{path}: not a PEM certificate file ({describe_ssl_error(exc)})"
    return f"{path}: {exc}"

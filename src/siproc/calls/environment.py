"""The environment a handler runs with (siproc(1), HANDLER ENVIRONMENT): siproc's own
environment without its secrets, plus the SIPROC_* variables that describe the call.

One function builds it for the phone (calls/phone.py) and for the handler simulator
(siproc/sim.py), so that a handler sees the same variables under both."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote

from siproc.calls.protocol import safe_value
from siproc.config import SECRET_VARIABLES
from siproc.sip.uri import NameAddr, SipUri

__all__ = ["base_environment", "file_safe_user", "handler_environment", "header_variable"]

#: What stays percent-escaped in SIPROC_REMOTE_USER: control characters (C0, DEL, C1), the
#: Unicode line separators, the path separators, and the escape character itself.
_UNSAFE_IN_USER = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029/\\%]")


def base_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the variables no child process gets (SIPROC_PASSWORD)."""
    return {k: v for k, v in env.items() if k not in SECRET_VARIABLES}


def handler_environment(
    base: Mapping[str, str],
    *,
    remote: NameAddr,
    remote_contact: str,
    outgoing: bool,
    call_id: str,
    local_uri: str,
    request_uri: str,
    referred_by: str | None = None,
    invite_headers: Iterable[tuple[str, str]] = (),
) -> dict[str, str]:
    """``base`` plus the call's variables. Every value may come from the network: control
    characters are escaped (safe_value), and the user part keeps what must not reach a file
    name escaped (file_safe_user). ``invite_headers``: the headers of an incoming INVITE, whose
    X- headers become SIPROC_HEADER_* variables."""
    env = dict(base)
    remote = remote.without_params("tag")
    user = remote.uri.user if isinstance(remote.uri, SipUri) else None
    env.update(
        SIPROC_REMOTE_URI=safe_value(str(remote.uri)),
        SIPROC_REMOTE_ID=safe_value(str(remote)),
        SIPROC_REMOTE_CONTACT=safe_value(remote_contact),
        SIPROC_OUTGOING="y" if outgoing else "n",
        SIPROC_CALL_ID=safe_value(call_id),
        SIPROC_LOCAL_URI=safe_value(local_uri),
        SIPROC_REQUEST_URI=safe_value(request_uri),
        SIPROC_REMOTE_DISPLAY_NAME=safe_value(remote.display_name or ""),
        SIPROC_REMOTE_USER=file_safe_user(user or ""),
    )
    if referred_by:  # a call placed because of a REFER (calls/transfer.py)
        env["SIPROC_REFERRED_BY"] = safe_value(referred_by)
    for name, value in invite_headers:
        if name.lower().startswith("x-"):
            env[header_variable(name)] = safe_value(value)
    return env


def file_safe_user(user: str) -> str:
    """The user part of a URI for SIPROC_REMOTE_USER: percent-escapes decoded (``%2B49`` ->
    ``+49``, ``caf%C3%A9`` -> ``café``) except for control characters, ``/``, ``\\`` and
    ``%``, which are (or stay) escaped, so that a handler may put it into a file name; ``.``
    and ``..`` become ``%2E`` and ``%2E%2E``."""
    out = _UNSAFE_IN_USER.sub(lambda m: quote(m.group(), safe=""), unquote(user, errors="replace"))
    return "%2E" * len(out) if out in (".", "..") else out


def header_variable(name: str) -> str:
    """SIPROC_HEADER_X_FOO_BAR for a header X-Foo.Bar: upper case, other characters as _."""
    return "SIPROC_HEADER_" + re.sub(r"[^A-Z0-9]", "_", name.upper())

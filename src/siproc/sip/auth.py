"""Digest authentication for a SIP client (UAC side).

What this module does, and which RFC text it follows:

- RFC 3261 section 22.4 adopts HTTP Digest (RFC 2617) for SIP: a 401 carries WWW-Authenticate
  challenges answered with Authorization, a 407 carries Proxy-Authenticate challenges answered
  with Proxy-Authorization (section 22.3). The request-URI is the digest ``uri``.
- RFC 2617 section 3.2.2 (and RFC 7616 section 3.4.1) define the response: ``KD(H(A1),
  nonce:nc:cnonce:qop:H(A2))`` with qop, or the RFC 2069 form ``KD(H(A1), nonce:H(A2))``
  without it; ``-sess`` algorithms fold nonce and cnonce into A1 (RFC 2617 section 3.2.2.2);
  ``qop=auth-int`` adds H(body) to A2 (section 3.2.2.3).
- RFC 7616 section 3.4 and RFC 8760 section 2.1 add SHA-256 and SHA-256-sess. RFC 8760
  section 2.3 has a UAS send one challenge per algorithm; section 2.4 tells the UAC to use the
  topmost one it supports unless a local policy says otherwise. Our policy is "the strongest
  supported algorithm per realm", which also defeats the downgrade described in RFC 8760
  section 3 (an attacker inserting an MD5 challenge on top).
- RFC 7616 section 3.4.4 (userhash) is honoured when the server asks for it.
- RFC 2617 section 3.2.1 / RFC 7616 section 3.3: ``stale=true`` means "your credentials were
  fine, only the nonce expired": retry with the new nonce, do not report a wrong password.

The module is pure (no I/O, no clock) and has no logging at all: passwords and digest
responses must never reach a log (DESIGN.md rule 5).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "MAX_REJECTED_CHALLENGES",
    "MAX_STALE_CHALLENGES",
    "SUPPORTED_ALGORITHMS",
    "AuthError",
    "Challenge",
    "DigestSession",
    "build_authorization",
    "challenge_header",
    "choose_challenge",
    "choose_challenges",
    "compute_response",
    "parse_challenge",
]


class AuthError(ValueError):
    """A challenge cannot be parsed or answered (unsupported scheme, algorithm or qop)."""


#: Algorithm name (canonical spelling, RFC 7616 section 3.3 / RFC 8760 section 2.1) ->
#: (hashlib name, strength rank used by :func:`choose_challenges`).
_ALGORITHMS: dict[str, tuple[str, int]] = {
    "MD5": ("md5", 1),
    "MD5-sess": ("md5", 1),
    "SHA-256": ("sha256", 2),
    "SHA-256-sess": ("sha256", 2),
}
SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(_ALGORITHMS)
_CANONICAL_ALGORITHM = {name.lower(): name for name in _ALGORITHMS}

#: qop values we can answer (RFC 2617 section 3.2.1), in order of preference: "auth" is
#: preferred because "auth-int" needs the exact body bytes of every request.
_QOP_PREFERENCE = ("auth", "auth-int")

#: A challenge answered with credentials and answered again with a *new*, non-stale nonce may be
#: a nonce that simply expired on a server that never sets stale; once is tolerated, twice in a
#: row without :meth:`DigestSession.accepted` in between means the credentials are rejected.
MAX_REJECTED_CHALLENGES = 2
#: Consecutive ``stale=true`` challenges tolerated before giving up (a broken server that marks
#: every nonce stale must not make us loop forever).
MAX_STALE_CHALLENGES = 5

_TOKEN_SEPARATORS = frozenset('()<>@,;:\\"/[]?={} \t')


@dataclass(frozen=True, slots=True)
class Challenge:
    """One parsed digest challenge (RFC 2617 section 3.2.1, RFC 7616 section 3.3).

    ``algorithm`` is canonicalised for the supported ones ("MD5", "MD5-sess", "SHA-256",
    "SHA-256-sess") and kept as sent otherwise; ``qop`` holds the lower-cased options.
    """

    scheme: str
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    domain: tuple[str, ...] = ()
    userhash: bool = False

    @property
    def supported(self) -> bool:
        """True when we can answer this challenge (known algorithm and an answerable qop)."""
        if self.algorithm not in _ALGORITHMS:
            return False
        return not self.qop or any(q in _QOP_PREFERENCE for q in self.qop)

    @property
    def selected_qop(self) -> str | None:
        """The qop we answer with: "auth" if offered, else "auth-int", else None (RFC 2069).

        Raises :class:`AuthError` when qop options were offered but none is known.
        """
        if not self.qop:
            return None
        for candidate in _QOP_PREFERENCE:
            if candidate in self.qop:
                return candidate
        raise AuthError(f"unsupported qop {','.join(self.qop)!r} (supported: auth, auth-int)")


# --------------------------------------------------------------------------------------------
# Parsing (RFC 7235 section 2.1 / RFC 3261 section 25.1 auth-param grammar)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] not in _TOKEN_SEPARATORS and text[pos].isprintable():
        pos += 1
    return text[start:pos], pos


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string starting at ``text[pos] == '"'``; backslash escapes any char."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char in "\r\n\0":
            # RFC 3261 section 25.1: qdtext and quoted-pair exclude CR and LF.
            raise AuthError("control character inside a quoted string in challenge")
        if char == "\\":
            if pos + 1 >= len(text):
                break
            out.append(text[pos + 1])
            if text[pos + 1] in "\r\n\0":
                raise AuthError("control character inside a quoted string in challenge")
            pos += 2
        elif char == '"':
            return "".join(out), pos + 1
        else:
            out.append(char)
            pos += 1
    raise AuthError("unterminated quoted string in challenge")


def _parse_params(text: str, pos: int) -> dict[str, str]:
    params: dict[str, str] = {}
    while True:
        pos = _skip_ws(text, pos)
        # Empty list elements ("a=1,,b=2") are allowed by the #rule (RFC 7230 section 7).
        while pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        if pos >= len(text):
            return params
        name, pos = _read_token(text, pos)
        if not name:
            raise AuthError(f"expected a parameter name at offset {pos} in challenge")
        pos = _skip_ws(text, pos)
        if pos >= len(text) or text[pos] != "=":
            raise AuthError(f"expected '=' after parameter {name!r} in challenge")
        pos = _skip_ws(text, pos + 1)
        if pos < len(text) and text[pos] == '"':
            value, pos = _read_quoted(text, pos)
        else:
            value, pos = _read_token(text, pos)
            if not value:
                raise AuthError(f"missing value for parameter {name!r} in challenge")
        key = name.lower()
        if key in params:
            # RFC 7235 section 2.1: each parameter name MUST only occur once per challenge.
            raise AuthError(f"duplicate parameter {name!r} in challenge")
        params[key] = value
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] != ",":
            raise AuthError(
                f"expected ',' after parameter {name!r} in challenge, found {text[pos]!r}"
            )


def parse_challenge(value: str) -> Challenge:
    """Parse one WWW-Authenticate / Proxy-Authenticate header value (RFC 3261 section 22.2).

    Parameter names and the algorithm are case-insensitive, values may be tokens or quoted
    strings with backslash escapes, unknown parameters are ignored. Raises :class:`AuthError`
    for a non-Digest scheme, a malformed parameter list or a missing realm/nonce. An unknown
    algorithm parses fine; :attr:`Challenge.supported` is then False.
    """
    text = value.strip()
    scheme, pos = _read_token(text, 0)
    if not scheme:
        raise AuthError(f"missing authentication scheme in {value!r}")
    if scheme.lower() != "digest":
        raise AuthError(f"unsupported authentication scheme {scheme!r} (only Digest)")
    if pos < len(text) and text[pos] not in " \t\r\n":
        raise AuthError(f"expected whitespace after scheme {scheme!r}")
    params = _parse_params(text, pos)
    realm = params.get("realm")
    if realm is None:
        raise AuthError("Digest challenge without realm")
    nonce = params.get("nonce")
    if nonce is None:
        raise AuthError("Digest challenge without nonce")
    algorithm_raw = params.get("algorithm", "MD5")
    algorithm = _CANONICAL_ALGORITHM.get(algorithm_raw.lower(), algorithm_raw)
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        scheme="Digest",
        realm=realm,
        nonce=nonce,
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
        domain=tuple(params.get("domain", "").split()),
        userhash=params.get("userhash", "").lower() == "true",
    )


def choose_challenges(challenges: Sequence[Challenge]) -> list[Challenge]:
    """One challenge per realm: the strongest supported algorithm (RFC 8760 section 2.4).

    Realms keep the order in which they first appear; among equally strong algorithms the
    server's order (its preference) wins. Unsupported challenges are skipped.
    """
    best: dict[str, Challenge] = {}
    for challenge in challenges:
        if not challenge.supported:
            continue
        current = best.get(challenge.realm)
        if current is None or _strength(challenge) > _strength(current):
            best[challenge.realm] = challenge
    return list(best.values())


def choose_challenge(challenges: Sequence[Challenge]) -> Challenge | None:
    """The challenge to answer for the first realm offered, or None if none is supported."""
    chosen = choose_challenges(challenges)
    return chosen[0] if chosen else None


def _strength(challenge: Challenge) -> int:
    return _ALGORITHMS[challenge.algorithm][1]


# --------------------------------------------------------------------------------------------
# Computing the response (RFC 2617 section 3.2.2, RFC 7616 section 3.4.1)


def _hash(algorithm: str, data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.new(_ALGORITHMS[algorithm][0], raw).hexdigest()


def compute_response(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int,
    body: bytes = b"",
) -> str:
    """The hex ``response`` value for ``challenge`` (RFC 2617 section 3.2.2.1).

    ``username`` is the plain user name (A1 always uses it, also with userhash).
    """
    if challenge.algorithm not in _ALGORITHMS:
        raise AuthError(
            f"unsupported digest algorithm {challenge.algorithm!r} "
            f"(supported: {', '.join(SUPPORTED_ALGORITHMS)})"
        )
    alg = challenge.algorithm
    qop = challenge.selected_qop
    ha1 = _hash(alg, f"{username}:{challenge.realm}:{password}")
    if alg.endswith("-sess"):  # RFC 2617 section 3.2.2.2
        ha1 = _hash(alg, f"{ha1}:{challenge.nonce}:{cnonce}")
    a2 = f"{method}:{uri}"
    if qop == "auth-int":  # RFC 2617 section 3.2.2.3
        a2 = f"{a2}:{_hash(alg, body)}"
    ha2 = _hash(alg, a2)
    if qop is None:  # RFC 2069 compatibility (RFC 2617 section 3.2.2.1)
        return _hash(alg, f"{ha1}:{challenge.nonce}:{ha2}")
    return _hash(alg, f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}")


def _quote(value: str) -> str:
    """A quoted-string (RFC 3261 section 25.1): backslash-escape '"' and '\\'."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError("CR, LF or NUL cannot appear in a digest parameter")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def build_authorization(
    challenge: Challenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int,
    body: bytes = b"",
) -> str:
    """The Authorization / Proxy-Authorization value answering ``challenge``.

    Follows the credentials grammar of RFC 3261 section 25.1 (dig-resp): quoted username,
    realm, nonce, uri, response, cnonce, opaque; unquoted algorithm, qop and the 8-hex-digit
    nc. Without qop (RFC 2069 style) neither qop nor nc is sent; cnonce is sent whenever qop
    is used or the algorithm is a ``-sess`` one (the server needs it to rebuild A1).
    """
    if not 1 <= nc <= 0xFFFFFFFF:
        raise ValueError(f"nonce count {nc} out of range 1..ffffffff")
    for name, value in (("method", method), ("uri", uri), ("cnonce", cnonce)):
        if not value or any(c in value for c in '\r\n"'):
            raise ValueError(f"invalid {name} {value!r} for a digest answer")
    response = compute_response(
        challenge,
        method=method,
        uri=uri,
        username=username,
        password=password,
        cnonce=cnonce,
        nc=nc,
        body=body,
    )
    qop = challenge.selected_qop
    sent_username = (
        _hash(challenge.algorithm, f"{username}:{challenge.realm}")
        if challenge.userhash
        else username
    )
    parts = [
        f"username={_quote(sent_username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
        f"algorithm={challenge.algorithm}",
    ]
    if qop is not None or challenge.algorithm.endswith("-sess"):
        parts.append(f"cnonce={_quote(cnonce)}")
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    if qop is not None:
        parts.append(f"qop={qop}")
        parts.append(f"nc={nc:08x}")
    if challenge.userhash:
        parts.append("userhash=true")
    return "Digest " + ", ".join(parts)


# --------------------------------------------------------------------------------------------
# Session state for a client that keeps sending requests (REGISTER refreshes, INVITE + BYE)


@dataclass(slots=True)
class _RealmState:
    challenge: Challenge
    nc: int = 0
    rejected: int = 0
    stale: int = 0


def _default_cnonce() -> str:
    return secrets.token_hex(8)


@dataclass(slots=True)
class DigestSession:
    """Credentials plus the per-realm challenge state of one client (RFC 3261 section 22.3).

    Usage, by the REGISTER client or the INVITE client::

        auth = DigestSession(username, password)
        request.headers += auth.headers("REGISTER", uri)   # none before the first challenge
        ... 401/407 arrives ...
        if auth.authorize(status, challenge_values):       # WWW-/Proxy-Authenticate values
            resend with a new CSeq and auth.headers(...)
        else:
            give up: auth.failure says why ("wrong username or password ...")
        ... a final response other than 401/407 to a request carrying credentials ...
        auth.accepted()

    Each challenge is remembered per (header, realm) and reused for later requests (RFC 3261
    section 22.3 allows it) with ``nc`` counting up (RFC 2617 section 3.2.2). Retry rules:

    - a new challenge (realm not yet answered, or a different nonce) -> retry;
    - the same nonce again without ``stale=true`` -> the server rejected our credentials:
      no retry, :attr:`failure` names a wrong username or password;
    - ``stale=true`` -> retry with the new nonce; not a failure (bounded by
      :data:`MAX_STALE_CHALLENGES` in a row);
    - a new non-stale nonce right after answering -> tolerated once (an expired nonce on a
      server that does not set stale), the second time in a row it is a wrong password
      (:data:`MAX_REJECTED_CHALLENGES`); :meth:`accepted` resets these counters.
    """

    username: str
    password: str = field(repr=False)
    realm: str | None = None
    """Answer only this realm when set; any realm otherwise."""
    cnonce_factory: Callable[[], str] = _default_cnonce
    failure: str | None = field(default=None, init=False)
    """Why the last :meth:`authorize` returned False, or None."""
    _realms: dict[tuple[str, str], _RealmState] = field(default_factory=dict, init=False)

    def authorize(self, status: int, challenges: Sequence[str]) -> bool:
        """Digest the challenges of a 401 or 407; True when the request should be resent.

        ``challenges`` are the raw WWW-Authenticate (401) or Proxy-Authenticate (407) values.
        Values that do not parse or are not Digest are skipped; a realm is answered with its
        strongest supported algorithm. Returns False (with :attr:`failure` set) when no
        challenge can be answered or when the server rejected our credentials.
        """
        header = _header_for_status(status)
        parsed: list[Challenge] = []
        problems: list[str] = []
        for value in challenges:
            try:
                parsed.append(parse_challenge(value))
            except AuthError as exc:
                problems.append(str(exc))
        unsupported = [c for c in parsed if not c.supported]
        if self.realm is not None:
            parsed = [c for c in parsed if c.realm == self.realm]
        chosen = choose_challenges(parsed)
        if not chosen:
            self.failure = _no_challenge_reason(status, self.realm, problems, unsupported)
            return False
        for challenge in chosen:
            reason = self._reject_reason(header, challenge, status)
            if reason is not None:
                self.failure = reason
                return False
        for challenge in chosen:
            key = (header, challenge.realm)
            previous = self._realms.get(key)
            state = _RealmState(challenge)
            if previous is not None:
                state.rejected = 0 if challenge.stale else previous.rejected + 1
                state.stale = previous.stale + 1 if challenge.stale else 0
            self._realms[key] = state
        self.failure = None
        return True

    def _reject_reason(self, header: str, challenge: Challenge, status: int) -> str | None:
        previous = self._realms.get((header, challenge.realm))
        if previous is None:
            return None
        if challenge.stale:
            if previous.stale + 1 > MAX_STALE_CHALLENGES:
                return (
                    f"{status}: realm {challenge.realm!r} sent stale=true "
                    f"{MAX_STALE_CHALLENGES + 1} times in a row; giving up"
                )
            return None
        if challenge.nonce == previous.challenge.nonce and previous.nc > 0:
            return (
                f"{status}: wrong username or password for realm {challenge.realm!r} "
                f"(user {self.username!r}): the server rejected the credentials"
            )
        if previous.nc > 0 and previous.rejected + 1 >= MAX_REJECTED_CHALLENGES:
            return (
                f"{status}: wrong username or password for realm {challenge.realm!r} "
                f"(user {self.username!r}): challenged again after answering"
            )
        return None

    def accepted(self) -> None:
        """The server accepted a request carrying our credentials: reset the retry counters."""
        for state in self._realms.values():
            state.rejected = 0
            state.stale = 0
        self.failure = None

    def headers(self, method: str, uri: str, body: bytes = b"") -> list[tuple[str, str]]:
        """Authorization / Proxy-Authorization headers for a new request (one per realm).

        Each call uses the next nonce count for every remembered challenge, so call it once
        per request sent (not per retransmission). Empty before any challenge.
        """
        result: list[tuple[str, str]] = []
        for (header, _realm), state in self._realms.items():
            state.nc += 1
            value = build_authorization(
                state.challenge,
                method=method,
                uri=uri,
                username=self.username,
                password=self.password,
                cnonce=self.cnonce_factory(),
                nc=state.nc,
                body=body,
            )
            result.append((header, value))
        return result

    def forget(self) -> None:
        """Drop every remembered challenge (e.g. after a transport or server change)."""
        self._realms.clear()
        self.failure = None


def challenge_header(status: int) -> str:
    """Where a 401 or 407 carries its challenges: WWW-Authenticate (401, the far end or
    registrar) or Proxy-Authenticate (407, a proxy), RFC 3261 sections 22.2 and 22.3."""
    return "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"


def _header_for_status(status: int) -> str:
    if status == 401:
        return "Authorization"
    if status == 407:
        return "Proxy-Authorization"
    raise ValueError(f"authorize() needs a 401 or 407 response, not {status}")


def _no_challenge_reason(
    status: int, realm: str | None, problems: list[str], unsupported: list[Challenge]
) -> str:
    header = challenge_header(status)
    details = list(problems)
    details += [
        f"realm {c.realm!r}: algorithm {c.algorithm!r} / qop {','.join(c.qop)!r} unsupported"
        for c in unsupported
    ]
    where = f" for realm {realm!r}" if realm is not None else ""
    text = f"{status}: no usable Digest challenge{where} in {header}"
    if details:
        text += " (" + "; ".join(details) + ")"
    return text

"""Digest authentication (siproc.sip.auth): RFC vectors, parsing, session retry rules."""

from __future__ import annotations

import hashlib
import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siproc.sip.auth import (
    MAX_STALE_CHALLENGES,
    AuthError,
    Challenge,
    DigestSession,
    build_authorization,
    challenge_header,
    choose_challenge,
    choose_challenges,
    compute_response,
    parse_challenge,
)

# RFC 7616 section 3.9.1
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def params_of(value: str) -> dict[str, str]:
    """Split an Authorization value into its parameters (test helper, unquotes)."""
    assert value.startswith("Digest ")
    out: dict[str, str] = {}
    for match in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,\s]+)', value[7:]):
        raw = match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        out[match.group(1)] = raw
    return out


def h(alg: str, text: str) -> str:
    return hashlib.new(alg, text.encode()).hexdigest()


# ---------------------------------------------------------------------------- RFC test vectors


def test_rfc2617_section_3_5_example() -> None:
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.selected_qop == "auth"
    value = build_authorization(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
        nc=1,
    )
    params = params_of(value)
    assert params["response"] == "6629fae49393a05397450978507c4ef1"
    assert params["username"] == "Mufasa"
    assert params["realm"] == "testrealm@host.com"
    assert params["nonce"] == "dcd98b7102dd2f0e8b11d0f600bfb0c093"
    assert params["uri"] == "/dir/index.html"
    assert params["qop"] == "auth"
    assert params["nc"] == "00000001"
    assert params["cnonce"] == "0a4f113b"
    assert params["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"
    assert params["algorithm"] == "MD5"
    # Token-valued parameters are not quoted (RFC 3261 section 25.1).
    assert "qop=auth," in value
    assert "nc=00000001" in value
    assert "algorithm=MD5," in value


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_examples(algorithm: str, expected: str) -> None:
    challenge = parse_challenge(
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )
    assert challenge.algorithm == algorithm
    value = build_authorization(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle of Life",
        cnonce=RFC7616_CNONCE,
        nc=1,
    )
    params = params_of(value)
    assert params["response"] == expected
    assert params["algorithm"] == algorithm
    assert params["opaque"] == RFC7616_OPAQUE
    assert params["cnonce"] == RFC7616_CNONCE


def test_md5_sess_response() -> None:
    challenge = Challenge(
        "Digest", "example.com", "abc", algorithm="MD5-sess", qop=("auth",), opaque=None
    )
    ha1 = h("md5", f"{h('md5', 'alice:example.com:pw')}:abc:c0ffee")
    ha2 = h("md5", "REGISTER:sip:example.com")
    expected = h("md5", f"{ha1}:abc:00000002:c0ffee:auth:{ha2}")
    value = build_authorization(
        challenge,
        method="REGISTER",
        uri="sip:example.com",
        username="alice",
        password="pw",
        cnonce="c0ffee",
        nc=2,
    )
    params = params_of(value)
    assert params["response"] == expected
    assert params["algorithm"] == "MD5-sess"
    assert params["nc"] == "00000002"
    assert "opaque" not in params


def test_sha256_sess_response() -> None:
    challenge = Challenge("Digest", "r", "n", algorithm="SHA-256-sess", qop=("auth",))
    ha1 = h("sha256", f"{h('sha256', 'u:r:p')}:n:cn")
    ha2 = h("sha256", "INVITE:sip:b@r")
    expected = h("sha256", f"{ha1}:n:00000001:cn:auth:{ha2}")
    got = compute_response(
        challenge, method="INVITE", uri="sip:b@r", username="u", password="p", cnonce="cn", nc=1
    )
    assert got == expected


def test_rfc2069_response_without_qop() -> None:
    challenge = parse_challenge('Digest realm="asterisk", nonce="5f1c2a3b"')
    value = build_authorization(
        challenge,
        method="INVITE",
        uri="sip:100@127.0.0.1",
        username="bob",
        password="secret",
        cnonce="ignored",
        nc=1,
    )
    params = params_of(value)
    ha1 = h("md5", "bob:asterisk:secret")
    ha2 = h("md5", "INVITE:sip:100@127.0.0.1")
    assert params["response"] == h("md5", f"{ha1}:5f1c2a3b:{ha2}")
    assert "qop" not in params
    assert "nc" not in params
    assert "cnonce" not in params


def test_md5_sess_without_qop_still_sends_cnonce() -> None:
    challenge = Challenge("Digest", "r", "n", algorithm="MD5-sess")
    params = params_of(
        build_authorization(
            challenge, method="M", uri="sip:x", username="u", password="p", cnonce="cc", nc=1
        )
    )
    assert params["cnonce"] == "cc"
    ha1 = h("md5", f"{h('md5', 'u:r:p')}:n:cc")
    assert params["response"] == h("md5", f"{ha1}:n:{h('md5', 'M:sip:x')}")


def test_auth_int_alone_hashes_the_body() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth-int"')
    assert challenge.selected_qop == "auth-int"
    body = b"v=0\r\n"
    value = build_authorization(
        challenge,
        method="INVITE",
        uri="sip:b@r",
        username="u",
        password="p",
        cnonce="cn",
        nc=1,
        body=body,
    )
    ha1 = h("md5", "u:r:p")
    ha2 = h("md5", f"INVITE:sip:b@r:{hashlib.md5(body).hexdigest()}")
    params = params_of(value)
    assert params["qop"] == "auth-int"
    assert params["response"] == h("md5", f"{ha1}:n:00000001:cn:auth-int:{ha2}")


def test_userhash() -> None:
    challenge = parse_challenge(
        'Digest realm="r", nonce="n", qop=auth, algorithm=SHA-256, userhash=true'
    )
    assert challenge.userhash
    params = params_of(
        build_authorization(
            challenge, method="M", uri="sip:x", username="u", password="p", cnonce="c", nc=1
        )
    )
    assert params["username"] == h("sha256", "u:r")
    assert params["userhash"] == "true"


def test_quoting_in_the_answer() -> None:
    challenge = Challenge("Digest", 'we"ird\\realm', "n", qop=("auth",))
    value = build_authorization(
        challenge, method="M", uri="sip:x", username='a"b', password="p", cnonce="c", nc=1
    )
    assert 'username="a\\"b"' in value
    assert 'realm="we\\"ird\\\\realm"' in value
    assert params_of(value)["realm"] == 'we"ird\\realm'


def test_build_rejects_bad_input() -> None:
    def answer(challenge: Challenge, username: str = "u", nc: int = 1) -> str:
        return build_authorization(
            challenge, method="M", uri="sip:x", username=username, password="p", cnonce="c", nc=nc
        )

    challenge = Challenge("Digest", "r", "n", qop=("auth",))
    with pytest.raises(ValueError, match="nonce count"):
        answer(challenge, nc=0)
    with pytest.raises(ValueError, match="CR, LF"):
        answer(challenge, username="u\r\nX-Evil: 1")
    with pytest.raises(AuthError, match="unsupported digest algorithm"):
        answer(Challenge("Digest", "r", "n", algorithm="SHA-512-256"))
    with pytest.raises(AuthError, match="unsupported qop"):
        answer(Challenge("Digest", "r", "n", qop=("auth-conf",)))
    with pytest.raises(ValueError, match="invalid uri"):
        build_authorization(
            challenge, method="M", uri='sip:"x', username="u", password="p", cnonce="c", nc=1
        )


# ---------------------------------------------------------------------------- parsing


def test_parse_odd_but_valid_challenge() -> None:
    challenge = parse_challenge(
        '  digest   REALM = "sip.example.com" ,nonce="a\\"b\\\\c",, algorithm = sha-256 ,'
        ' QOP="auth" , stale=TRUE, foo=bar, baz="x, y=z", opaque="", '
        'domain="sip:a.example sip:b.example"  '
    )
    assert challenge == Challenge(
        scheme="Digest",
        realm="sip.example.com",
        nonce='a"b\\c',
        algorithm="SHA-256",
        qop=("auth",),
        opaque="",
        stale=True,
        domain=("sip:a.example", "sip:b.example"),
    )


def test_parse_defaults_and_unquoted_values() -> None:
    challenge = parse_challenge("Digest realm=asterisk,nonce=1234abcd,algorithm=md5-SESS")
    assert challenge.realm == "asterisk"
    assert challenge.nonce == "1234abcd"
    assert challenge.algorithm == "MD5-sess"
    assert challenge.qop == ()
    assert challenge.opaque is None
    assert challenge.stale is False
    assert challenge.supported


def test_parse_stale_false_and_tab_separators() -> None:
    challenge = parse_challenge('Digest\trealm="r",\tnonce="n",\tstale=false')
    assert challenge.stale is False


def test_unknown_algorithm_parses_but_is_unsupported() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-512-256')
    assert challenge.algorithm == "SHA-512-256"
    assert not challenge.supported
    assert not parse_challenge('Digest realm="r", nonce="n", qop="auth-conf"').supported


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('Basic realm="r"', "unsupported authentication scheme 'Basic'"),
        ('Digest nonce="n"', "without realm"),
        ('Digest realm="r"', "without nonce"),
        ("Digest", "without realm"),
        ("", "missing authentication scheme"),
        ('Digest realm="r, nonce=n', "unterminated"),
        ('Digest realm="r\\', "unterminated"),
        ('Digest realm="r" nonce="n"', "expected ','"),
        ('Digest realm="r", nonce', "expected '='"),
        ('Digest realm="r", nonce=', "missing value"),
        ('Digest realm="r", realm="s", nonce="n"', "duplicate parameter"),
        ('Digest realm="r", ="n"', "parameter name"),
        ('Digest realm="a\r\nb", nonce="n"', "control character"),
        ('Digest realm="a\\\nb", nonce="n"', "control character"),
        ('Digest="x"', "expected whitespace"),
    ],
)
def test_parse_errors(value: str, message: str) -> None:
    with pytest.raises(AuthError, match=re.escape(message)):
        parse_challenge(value)


def test_auth_error_is_a_value_error() -> None:
    assert issubclass(AuthError, ValueError)


# ---------------------------------------------------------------------------- choosing


def test_choose_prefers_sha256_for_the_same_realm() -> None:
    md5 = Challenge("Digest", "r", "n1", algorithm="MD5")
    sha = Challenge("Digest", "r", "n2", algorithm="SHA-256")
    assert choose_challenge([md5, sha]) is sha
    assert choose_challenge([sha, md5]) is sha


def test_choose_keeps_server_order_for_equal_strength() -> None:
    first = Challenge("Digest", "r", "n1", algorithm="SHA-256-sess")
    second = Challenge("Digest", "r", "n2", algorithm="SHA-256")
    assert choose_challenge([first, second]) is first


def test_choose_skips_unsupported() -> None:
    weird = Challenge("Digest", "r", "n1", algorithm="SHA-512-256")
    md5 = Challenge("Digest", "r", "n2")
    assert choose_challenge([weird, md5]) is md5
    assert choose_challenge([weird]) is None
    assert choose_challenge([]) is None


def test_choose_challenges_one_per_realm() -> None:
    a = Challenge("Digest", "a", "n1")
    b = Challenge("Digest", "b", "n2", algorithm="SHA-256")
    a2 = Challenge("Digest", "a", "n3", algorithm="SHA-256")
    assert choose_challenges([a, b, a2]) == [a2, b]


# ---------------------------------------------------------------------------- session


def make_session(**kwargs: object) -> DigestSession:
    counter = itertools.count(1)
    return DigestSession("alice", "pw", cnonce_factory=lambda: f"cn{next(counter)}", **kwargs)  # type: ignore[arg-type]


def test_session_no_headers_before_a_challenge() -> None:
    assert make_session().headers("REGISTER", "sip:example.com") == []


def test_session_answers_401_and_counts_nonces() -> None:
    session = make_session()
    assert session.authorize(401, ['Digest realm="example.com", nonce="n1", qop="auth"'])
    assert session.failure is None
    [(name, value)] = session.headers("REGISTER", "sip:example.com")
    assert name == "Authorization"
    params = params_of(value)
    assert params["nc"] == "00000001"
    assert params["cnonce"] == "cn1"
    expected = compute_response(
        Challenge("Digest", "example.com", "n1", qop=("auth",)),
        method="REGISTER",
        uri="sip:example.com",
        username="alice",
        password="pw",
        cnonce="cn1",
        nc=1,
    )
    assert params["response"] == expected
    session.accepted()
    [(_, value2)] = session.headers("REGISTER", "sip:example.com")
    assert params_of(value2)["nc"] == "00000002"
    assert params_of(value2)["cnonce"] == "cn2"


def test_session_407_uses_proxy_authorization() -> None:
    session = make_session()
    assert session.authorize(407, ['Digest realm="proxy", nonce="p1"'])
    [(name, value)] = session.headers("INVITE", "sip:bob@example.com")
    assert name == "Proxy-Authorization"
    assert params_of(value)["uri"] == "sip:bob@example.com"


def test_session_prefers_sha256_of_several_headers() -> None:
    session = make_session()
    assert session.authorize(
        401,
        [
            'Digest realm="r", nonce="m", algorithm=MD5, qop="auth"',
            'Digest realm="r", nonce="s", algorithm=SHA-256, qop="auth"',
        ],
    )
    [(_, value)] = session.headers("REGISTER", "sip:r")
    assert params_of(value)["algorithm"] == "SHA-256"
    assert params_of(value)["nonce"] == "s"


def test_session_same_nonce_again_means_wrong_password() -> None:
    session = make_session()
    challenge = 'Digest realm="example.com", nonce="n1", qop="auth"'
    assert session.authorize(401, [challenge])
    session.headers("REGISTER", "sip:example.com")
    assert not session.authorize(401, [challenge])
    assert session.failure is not None
    assert "wrong username or password" in session.failure
    assert "example.com" in session.failure
    assert "pw" not in session.failure.replace("password", "")


def test_session_same_nonce_before_answering_is_retried() -> None:
    # Two requests challenged with the same nonce before we ever used it: not a failure.
    session = make_session()
    challenge = 'Digest realm="r", nonce="n1"'
    assert session.authorize(401, [challenge])
    assert session.authorize(401, [challenge])


def test_session_stale_retries_without_failure() -> None:
    session = make_session()
    assert session.authorize(401, ['Digest realm="r", nonce="n1", qop=auth'])
    session.headers("REGISTER", "sip:r")
    session.accepted()
    session.headers("REGISTER", "sip:r")
    assert session.authorize(401, ['Digest realm="r", nonce="n2", qop=auth, stale=TRUE'])
    assert session.failure is None
    [(_, value)] = session.headers("REGISTER", "sip:r")
    params = params_of(value)
    assert params["nonce"] == "n2"
    assert params["nc"] == "00000001"  # a new nonce restarts the count


def test_session_endless_stale_gives_up() -> None:
    session = make_session()
    assert session.authorize(401, ['Digest realm="r", nonce="n0"'])
    for i in range(MAX_STALE_CHALLENGES):
        session.headers("REGISTER", "sip:r")
        assert session.authorize(401, [f'Digest realm="r", nonce="s{i}", stale=true'])
    session.headers("REGISTER", "sip:r")
    assert not session.authorize(401, ['Digest realm="r", nonce="last", stale=true'])
    assert session.failure is not None
    assert "stale" in session.failure


def test_session_new_nonce_every_time_means_wrong_password() -> None:
    # Servers such as Asterisk send a fresh nonce with every 401: once is an expired nonce,
    # twice in a row after answering is a rejected password.
    session = make_session()
    assert session.authorize(401, ['Digest realm="r", nonce="a"'])
    session.headers("REGISTER", "sip:r")
    assert session.authorize(401, ['Digest realm="r", nonce="b"'])
    session.headers("REGISTER", "sip:r")
    assert not session.authorize(401, ['Digest realm="r", nonce="c"'])
    assert session.failure is not None
    assert "wrong username or password" in session.failure


def test_session_accepted_resets_the_rejection_count() -> None:
    session = make_session()
    assert session.authorize(401, ['Digest realm="r", nonce="a"'])
    for nonce in "bcdef":
        session.headers("REGISTER", "sip:r")
        session.accepted()  # the previous registration succeeded
        session.headers("REGISTER", "sip:r")
        assert session.authorize(401, [f'Digest realm="r", nonce="{nonce}"'])


def test_session_skips_unusable_values_and_reports_why() -> None:
    session = make_session()
    assert not session.authorize(
        401, ['Basic realm="r"', 'Digest realm="r", nonce="n", algorithm=SHA-512-256']
    )
    assert session.failure is not None
    assert "no usable Digest challenge" in session.failure
    assert "Basic" in session.failure
    assert "SHA-512-256" in session.failure
    assert session.authorize(401, ['Basic realm="r"', 'Digest realm="r", nonce="n"'])


def test_session_with_a_fixed_realm() -> None:
    session = make_session(realm="mine")
    assert not session.authorize(407, ['Digest realm="other", nonce="n"'])
    assert session.failure is not None
    assert "'mine'" in session.failure
    assert session.authorize(
        407, ['Digest realm="other", nonce="n"', 'Digest realm="mine", nonce="m"']
    )
    [(_, value)] = session.headers("INVITE", "sip:b@x")
    assert params_of(value)["realm"] == "mine"


def test_session_several_realms_give_one_header_each() -> None:
    session = make_session()
    assert session.authorize(401, ['Digest realm="registrar", nonce="a"'])
    assert session.authorize(407, ['Digest realm="proxy", nonce="b"'])
    got = session.headers("INVITE", "sip:b@x")
    assert [name for name, _ in got] == ["Authorization", "Proxy-Authorization"]
    assert [params_of(v)["realm"] for _, v in got] == ["registrar", "proxy"]


def test_session_auth_int_uses_the_body() -> None:
    session = make_session()
    assert session.authorize(401, ['Digest realm="r", nonce="n", qop="auth-int"'])
    [(_, with_body)] = session.headers("INVITE", "sip:b@x", b"v=0\r\n")
    assert params_of(with_body)["qop"] == "auth-int"


def test_session_rejects_other_statuses() -> None:
    with pytest.raises(ValueError, match="401 or 407"):
        make_session().authorize(403, [])


def test_session_forget_and_repr_hide_the_password() -> None:
    session = DigestSession("alice", "s3cr3t-pass")
    assert "s3cr3t-pass" not in repr(session)
    assert session.authorize(401, ['Digest realm="r", nonce="n", qop=auth'])
    cnonce = params_of(session.headers("M", "sip:x")[0][1])["cnonce"]
    assert re.fullmatch(r"[0-9a-f]{16}", cnonce)
    session.forget()
    assert session.headers("M", "sip:x") == []


@given(st.text(max_size=200) | st.builds("Digest {}".format, st.text(max_size=200)))
@settings(max_examples=300, deadline=None)
def test_fuzz_parse_it_or_raise_auth_error(value: str) -> None:
    try:
        challenge = parse_challenge(value)
    except AuthError:
        return
    if challenge.supported:
        answer = build_authorization(
            challenge, method="M", uri="sip:x", username="u", password="p", cnonce="c", nc=1
        )
        assert "\r" not in answer and "\n" not in answer


def test_challenge_header_follows_the_status() -> None:
    assert challenge_header(401) == "WWW-Authenticate"  # the far end or the registrar
    assert challenge_header(407) == "Proxy-Authenticate"  # a proxy on the way

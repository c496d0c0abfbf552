"""SIP URIs and name-addr values (RFC 3261 sections 19.1, 20.10, 25.1; RFC 4475 section 3).

Round trips keep every byte (escapes are never decoded, RFC 3261 section 19.1.4 compares them
unescaped instead); invalid URIs raise `ParseError` with a message naming the bad part; property
tests check that every valid `SipUri` survives `str` -> `parse_uri` and that no input text makes
the parsers raise anything but `ParseError` (DESIGN.md section 1, rule 4).
"""

from __future__ import annotations

import contextlib
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siproc.sip.errors import ParseError
from siproc.sip.uri import (
    AbsoluteUri,
    NameAddr,
    SipUri,
    format_host,
    get_param,
    parse_header_params,
    parse_host_port,
    parse_name_addr,
    parse_name_addr_list,
    parse_sip_uri,
    parse_uri,
    set_param,
    split_list,
)

# -- SIP URIs: round trips ----------------------------------------------------------------------

ROUND_TRIPS = [
    "sip:alice@example.com",
    "sips:alice@example.com:5061",
    "sip:alice:secret@example.com;transport=tcp",
    "sip:alice:@example.com",  # empty password
    "sip:%61lice@example.com",  # escape kept as received
    "sip:null-%00-null@example.com",  # RFC 4475 section 3.1.1.4
    "sip:sips%3Auser%40example.com@example.net",  # RFC 4475 section 3.1.1.3
    "sip:user;par=u%40example.net@example.com",  # RFC 4475 section 3.1.1.9
    "sip:+1-212-555-1212:1234@gateway.com;user=phone",  # RFC 3261 section 19.1.3
    "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com",  # RFC 4475 3.1.1.2
    "sip:alice@[2001:db8::10]:5070;maddr=[2001:db8::1];lr",
    "sip:[::1]",
    "sip:192.0.2.4",
    "sip:host.example.com.",  # fully qualified, trailing dot
    "sip:user@example.com;lr",  # flag parameter
    "sip:user@example.com;lr;transport=udp;x=",  # flag, value, empty value
    "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",  # RFC 3261 section 19.1.3
    "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
    "sip:cal%6Cer@host5.example.net;%6c%72;n%61me=v%61lue%25%34%31",  # RFC 4475 3.1.1.3
]


@pytest.mark.parametrize("text", ROUND_TRIPS)
def test_round_trip_keeps_every_byte(text: str) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert str(uri) == text
    assert parse_uri(str(uri)) == uri


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:example.com", SipUri("sip", "example.com")),
        (
            "sips:alice:pw@example.com:5061",
            SipUri("sips", "example.com", "alice", "pw", 5061),
        ),
        (
            "sip:%75se%72@example.com",
            SipUri("sip", "example.com", user="%75se%72"),
        ),
        (
            "sip:user;par=u%40example.net@example.com",
            SipUri("sip", "example.com", user="user;par=u%40example.net"),
        ),
        (
            "sip:[2001:db8::10]:5070",
            SipUri("sip", "2001:db8::10", port=5070),
        ),
        (
            "sip:a@b;Transport=TCP;LR;ttl=15",
            SipUri("sip", "b", "a", params=(("transport", "TCP"), ("lr", None), ("ttl", "15"))),
        ),
        (
            "sip:a@b?Subject=hi%20there&Priority=urgent&empty=",
            SipUri(
                "sip",
                "b",
                "a",
                headers=(("Subject", "hi%20there"), ("Priority", "urgent"), ("empty", "")),
            ),
        ),
        ("SIP:a@B.example.COM", SipUri("sip", "B.example.COM", "a")),  # scheme lowercased
    ],
)
def test_fields(text: str, expected: SipUri) -> None:
    assert parse_uri(text) == expected


def test_ipv6_reference_is_stored_without_brackets_and_written_with_them() -> None:
    uri = parse_sip_uri("sip:alice@[2001:db8::10]")
    assert uri.host == "2001:db8::10"
    assert str(uri) == "sip:alice@[2001:db8::10]"
    assert format_host("2001:db8::10") == "[2001:db8::10]"
    assert format_host("192.0.2.1") == "192.0.2.1"
    assert uri.address_of_record == "sip:alice@[2001:db8::10]"


@pytest.mark.parametrize(
    ("text", "transport"),
    [
        ("sip:a@b", "udp"),  # RFC 3263 section 4.1: UDP for sip
        ("sips:a@b", "tls"),  # and TLS for sips
        ("sip:a@b;transport=TCP", "tcp"),  # lowercased
        ("sips:a@b;transport=tcp", "tls"),  # sips: is TLS over TCP (RFC 5630 section 3.1.3)
        ("sip:a@b;transport=tls", "tls"),
        ("sip:a@b;transport", "udp"),  # a flag without value asks for nothing
    ],
)
def test_transport_default(text: str, transport: str) -> None:
    assert parse_sip_uri(text).transport == transport


def test_param_helpers() -> None:
    uri = parse_sip_uri("sip:a@b;lr;transport=tcp")
    assert uri.param("lr") == ""  # a flag
    assert uri.param("transport") == "tcp"
    assert uri.param("maddr") is None
    changed = uri.with_params(transport="udp", ob=None)
    assert str(changed) == "sip:a@b;lr;transport=udp;ob"  # replaced in place, appended
    assert str(changed.without_params("lr", "ob")) == "sip:a@b;transport=udp"
    assert str(uri) == "sip:a@b;lr;transport=tcp"  # frozen: the original is unchanged
    params = (("a", "1"),)
    assert set_param(params, "a", None) == (("a", None),)
    assert get_param(set_param(params, "b", "2"), "b") == "2"


def test_address_of_record_drops_password_port_and_params() -> None:
    uri = parse_sip_uri("sips:bob:pw@Example.com:5061;transport=tcp?x=y")
    assert uri.address_of_record == "sips:bob@Example.com"
    assert parse_sip_uri("sip:example.com").address_of_record == "sip:example.com"


def test_matches_compares_user_unescaped_and_host_case_insensitively() -> None:
    a = parse_sip_uri("sip:%61lice@EXAMPLE.com;transport=tcp")
    assert a.matches(parse_sip_uri("sip:alice@example.com;transport=tcp;lr"))
    assert not a.matches(parse_sip_uri("sip:Alice@example.com;transport=tcp"))  # user: case
    assert not a.matches(parse_sip_uri("sip:alice@example.com"))  # transport differs
    assert not a.matches(parse_sip_uri("sips:alice@example.com;transport=tcp"))
    assert not a.matches(parse_sip_uri("sip:alice@example.com:5060;transport=tcp"))


@pytest.mark.parametrize(
    ("text", "scheme", "rest"),
    [
        ("tel:+1-201-555-0123", "tel", "+1-201-555-0123"),
        ("mailto:user@example.com", "mailto", "user@example.com"),
        ("soap.beep://192.0.2.103:3002", "soap.beep", "//192.0.2.103:3002"),  # RFC 4475 3.3.3
        ("nobodyKnowsThisScheme:totallyopaquecontent", "nobodyknowsthisscheme", None),
    ],
)
def test_other_schemes_are_absolute_uris(text: str, scheme: str, rest: str | None) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, AbsoluteUri)
    assert uri.scheme == scheme
    if rest is not None:
        assert uri.rest == rest
        assert str(uri) == text
    with pytest.raises(ParseError, match="not a sip: or sips: URI"):
        parse_sip_uri(text)


# -- SIP URIs: invalid ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a URI"),
        ("example.com", "not a URI"),
        ("1sip:a@b", "not a URI"),
        ("<sip:a@b>", "not a URI"),
        ("sip:a@b>", "whitespace or <>"),
        ('sip:a@b;x="q"', "whitespace or <>"),
        ("sip:al ice@b", "whitespace or <>"),
        ("sip:a@b\t", "whitespace or <>"),
        ("sip:a@b?x=<y>", "whitespace or <>"),
        ("tel:", "empty tel: URI"),
        ("sip:", "invalid host ''"),
        ("sip:alice@", "invalid host ''"),
        ("sip:@example.com", "empty user part"),
        ("sip::pw@example.com", "empty user part"),
        ("sip:a@-bad-.example.com", "invalid host '-bad-.example.com'"),
        ("sip:a@b_c.example.com", "invalid host"),
        ("sip:a@exa..mple.com", "invalid host"),
        ("sip:a@example.com:0", "port 0 out of range"),
        ("sip:a@example.com:65536", "port 65536 out of range"),
        ("sip:a@example.com:5o60", "invalid port"),
        ("sip:a@example.com:", "invalid port"),
        ("sip:a@example.com:1234567", "invalid port"),
        ("sip:a@example.com:\u00b2", "invalid port"),  # superscript two: isdigit() but no DIGIT
        ("sip:a@example.com:\u0661\u0662", "invalid port"),  # Arabic-Indic digits
        ("sip:a@[2001:db8::1", "unterminated IPv6 reference"),
        ("sip:a@[not-an-address]", "invalid IPv6 address 'not-an-address'"),
        ("sip:a@[2001:db8::1]x", "invalid port"),
        ("sip:a@2001:db8::1", "invalid port"),  # IPv6 needs brackets
        ("sip:al{ice@b", "invalid character '{' in user part"),
        ("sip:al%zzice@b", "broken %-escape in user part"),
        ("sip:alice%4@b", "broken %-escape in user part"),
        ("sip:alice:pa;ss@b", "invalid character ';' in password"),
        ("sip:a@b;;lr", "empty parameter"),
        ("sip:a@b;=x", "empty parameter"),
        ("sip:a@b;", "empty parameter"),
        ("sip:a@b;x=y=z", "invalid character '=' in parameter value"),
        ("sip:a@b;x{=1", "invalid character '{' in parameter name"),
        ("sip:a@b;x=%g0", "broken %-escape in parameter value"),
        ("sip:a@b?", "empty URI header"),
        ("sip:a@b?=v", "empty URI header"),
        ("sip:a@b?x=1&&y=2", "empty URI header"),
        ("sip:a@b?x=a;b", "invalid character ';' in URI header value"),
        ("sip:a@b?x{=1", "invalid character '{' in URI header name"),
    ],
)
def test_invalid_uri(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message.replace("?", r"\?").replace("[", r"\[")):
        parse_uri(text)


def test_sip_uri_object_rules() -> None:
    with pytest.raises(ParseError, match="scheme must be sip or sips"):
        SipUri("tel", "x")
    with pytest.raises(ParseError, match="needs a host"):
        SipUri("sip", "")


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("example.com", "example.com", None),
        ("example.com:5060", "example.com", 5060),
        ("192.0.2.1:1", "192.0.2.1", 1),
        ("[::1]:65535", "::1", 65535),
        ("[fe80::1]", "fe80::1", None),
    ],
)
def test_parse_host_port(text: str, host: str, port: int | None) -> None:
    assert parse_host_port(text) == (host, port)


# -- name-addr and addr-spec (RFC 3261 section 20.10) ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "display", "uri", "params"),
    [
        ("<sip:alice@example.com>", None, "sip:alice@example.com", ()),
        (
            '"Alice" <sip:alice@example.com>;tag=88sja8x',
            "Alice",
            "sip:alice@example.com",
            (("tag", "88sja8x"),),
        ),
        # quoted-pair escapes: \" and \\ (RFC 3261 section 25.1)
        ('"Alice \\"Al\\" Smith" <sip:a@b>', 'Alice "Al" Smith', "sip:a@b", ()),
        ('"back\\\\slash" <sip:a@b>', "back\\slash", "sip:a@b", ()),
        ('"J Rosenberg \\\\\\""  <sip:jdrosen@example.com>', 'J Rosenberg \\"', None, ()),
        ('"%Z%45" <sip:resource@example.com>', "%Z%45", None, ()),  # RFC 4475 3.1.1.5
        ('"Bell, Alexander" <sip:a.g.bell@example.com>;tag=43', "Bell, Alexander", None, None),
        ('"J\u00fcrgen" <sip:j@example.de>', "J\u00fcrgen", None, ()),
        ('""<sip:a@b>', "", "sip:a@b", ()),
        # unquoted token display names, whitespace collapsed
        ("Bob Smith <sip:bob@example.com>", "Bob Smith", "sip:bob@example.com", ()),
        ("Bob   Smith\t<sip:bob@example.com>", "Bob Smith", "sip:bob@example.com", ()),
        ("caller<sip:caller@example.com>;tag=323", "caller", None, (("tag", "323"),)),  # 3.1.1.6
        (
            "token1~` token2'+_ token3*%!.- <sip:mundane@example.com>",  # RFC 4475 3.1.1.2
            "token1~` token2'+_ token3*%!.-",
            "sip:mundane@example.com",
            (),
        ),
        # brackets keep URI params with the URI; header params follow
        (
            "<sip:bob@example.com;transport=tcp>;expires=60;q=0.5",
            None,
            "sip:bob@example.com;transport=tcp",
            (("expires", "60"), ("q", "0.5")),
        ),
        (
            "<sip:a@b> ; newparam = newvalue ; secondparam ; q = 0.33",
            None,
            "sip:a@b",
            (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33")),
        ),
        ('<sip:a@b>;x="quoted;semi,comma"', None, "sip:a@b", (("x", '"quoted;semi,comma"'),)),
        ("<sip:a@b>;Tag=AbC", None, "sip:a@b", (("tag", "AbC"),)),  # names lowercased
        ("<sip:a@b>;received=[2001:db8::1]", None, "sip:a@b", (("received", "[2001:db8::1]"),)),
        ("<sip:a@b?Route=%3Csip:c%3E>", None, "sip:a@b?Route=%3Csip:c%3E", ()),
        ("<tel:+1-201-555-0123>", None, "tel:+1-201-555-0123", ()),
        ("< sip:t.watson@example.org >", None, "sip:t.watson@example.org", ()),  # 3.1.2.14
    ],
)
def test_name_addr(
    text: str,
    display: str | None,
    uri: str | None,
    params: tuple[tuple[str, str | None], ...] | None,
) -> None:
    value = parse_name_addr(text)
    assert value.display_name == display
    if uri is not None:
        assert str(value.uri) == uri
    if params is not None:
        assert value.params == params


@pytest.mark.parametrize(
    ("text", "uri", "params"),
    [
        # RFC 3261 section 20 / RFC 4475 section 3.1.2.13: in the addr-spec form every ;param
        # belongs to the header, not to the URI.
        ("sip:bob@example.com;tag=1234", "sip:bob@example.com", (("tag", "1234"),)),
        (
            "sip:caller@example.net;tag=134161461246",
            "sip:caller@example.net",
            (("tag", "134161461246"),),
        ),
        (
            "sip:user@example.com;transport=tcp;expires=60",
            "sip:user@example.com",
            (("transport", "tcp"), ("expires", "60")),
        ),
        ("  sip:a@b  ", "sip:a@b", ()),
        ("tel:+1-201-555-0123;phone-context=x", "tel:+1-201-555-0123", (("phone-context", "x"),)),
        ("http://www.example.com", "http://www.example.com", ()),
    ],
)
def test_addr_spec_params_belong_to_the_header(
    text: str, uri: str, params: tuple[tuple[str, str | None], ...]
) -> None:
    value = parse_name_addr(text)
    assert value.display_name is None
    assert str(value.uri) == uri
    assert value.params == params
    if isinstance(value.uri, SipUri):
        assert value.uri.params == ()


def test_addr_spec_with_uri_headers_needs_angle_brackets() -> None:
    # RFC 4475 section 3.1.2.13 (regbadct.dat): an escaped URI header forces name-addr form.
    with pytest.raises(ParseError, match="URI headers need angle brackets"):
        parse_name_addr("sip:user@example.com?Route=%3Csip:sip.example.com%3E")
    assert parse_name_addr("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>").uri


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty name-addr"),
        ("   ", "empty name-addr"),
        ('"unterminated <sip:a@b>', "unterminated quoted string"),
        ('"Joe" sip:a@b', "display name not followed by <URI>"),
        ('"Joe"', "display name not followed by <URI>"),
        ("<sip:a@b", "missing '>'"),
        ("<>", "not a URI"),
        ("Bell, Alexander <sip:a.g.bell@example.com>", "unquoted display name"),  # 3.1.2.15
        ("Joe@home <sip:a@b>", "unquoted display name with special characters"),
        ("<sip:a@b> junk", "unexpected text"),
        ("<sip:a@b>;", "invalid header parameter"),
        ("<sip:a@b>;=x", "invalid header parameter"),
        ("<sip:a@b>;tag=", "invalid header parameter value"),
        ("<sip:a@b>;tag=a b", "invalid header parameter value"),
        ('<sip:a@b>;x="open', "unterminated quoted string"),
        ("<sip:a@b>;;;;", "invalid header parameter"),  # RFC 4475 section 3.1.2.1
        ("Joe sip:a@b", "not a URI"),
        ("sip:a@b c", "whitespace or <>"),
        ("<sip:a@b:99999>", "out of range"),
    ],
)
def test_invalid_name_addr(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_name_addr(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (NameAddr(parse_uri("sip:a@b")), "<sip:a@b>"),
        (NameAddr(parse_uri("sip:a@b;lr"), "Alice", (("tag", "1"),)), '"Alice" <sip:a@b;lr>;tag=1'),
        (NameAddr(parse_uri("sip:a@b"), 'say "hi" \\o/'), '"say \\"hi\\" \\\\o/" <sip:a@b>'),
        (NameAddr(parse_uri("sip:a@b"), None, (("ob", None),)), "<sip:a@b>;ob"),
    ],
)
def test_name_addr_serialize_and_round_trip(value: NameAddr, text: str) -> None:
    assert str(value) == text
    assert parse_name_addr(text) == value


def test_name_addr_param_helpers() -> None:
    value = parse_name_addr('"A" <sip:a@b>;tag=1;expires=60')
    assert value.tag == "1"
    assert value.param("expires") == "60"
    assert value.with_params(tag="2").tag == "2"
    assert value.without_params("tag").tag is None
    assert parse_name_addr("<sip:a@b>").tag is None


# -- lists ---------------------------------------------------------------------------------------


def test_split_list_ignores_commas_inside_quotes_and_brackets() -> None:
    text = '"Doe, John" <sip:john@x>;q=0.5, <mailto:a,b@c> ,sip:c@d;x="1,2",, '
    assert split_list(text) == [
        '"Doe, John" <sip:john@x>;q=0.5',
        "<mailto:a,b@c>",
        'sip:c@d;x="1,2"',
    ]
    assert split_list('"a \\" , b", c') == ['"a \\" , b"', "c"]  # escaped quote stays inside
    assert split_list("") == []


def test_split_list_unterminated_quote() -> None:
    with pytest.raises(ParseError, match="unterminated quoted string"):
        split_list('"Doe, John <sip:john@x>, <sip:a@b>')


def test_name_addr_list() -> None:
    values = parse_name_addr_list(
        '"Watson, Thomas" <sip:t@example.org>;q=0.7, sip:a@b;expires=5,\t<sip:c@d;lr>'
    )
    assert [str(v.uri) for v in values] == ["sip:t@example.org", "sip:a@b", "sip:c@d;lr"]
    assert values[0].display_name == "Watson, Thomas"
    assert values[0].param("q") == "0.7"
    assert values[1].param("expires") == "5"
    with pytest.raises(ParseError):
        parse_name_addr_list("<sip:a@b>, <sip:c@d")


def test_parse_header_params() -> None:
    assert parse_header_params('tag=1;lr; Q = 0.5 ;x="a;b"') == (
        ("tag", "1"),
        ("lr", None),
        ("q", "0.5"),
        ("x", '"a;b"'),
    )
    with pytest.raises(ParseError, match="invalid header parameter value"):
        parse_header_params("x=<y>")


# -- property tests ------------------------------------------------------------------------------

_HEX = "0123456789abcdefABCDEF"
_UNRESERVED = string.ascii_letters + string.digits + "-_.!~*'()"


def _escaped(hex_digits: str = _HEX) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(hex_digits), st.sampled_from(hex_digits)).map(
        lambda p: "%" + p[0] + p[1]
    )


def _chars(alphabet: str, *, min_size: int = 0, hex_digits: str = _HEX) -> st.SearchStrategy[str]:
    return st.lists(
        st.one_of(st.sampled_from(alphabet), _escaped(hex_digits)), min_size=min_size, max_size=12
    ).map("".join)


_LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9\-]{0,8}[A-Za-z0-9])?", fullmatch=True)
_HOSTNAME = st.builds(
    lambda labels, dot: ".".join(labels) + dot,
    st.lists(_LABEL, min_size=1, max_size=4),
    st.sampled_from(["", "."]),
)
_HOST = st.one_of(
    _HOSTNAME,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
_PARAM_NAME = _chars(
    string.ascii_lowercase + string.digits + "-_.!~*'()[]/:&+$",  # lowercase: names fold
    min_size=1,
    hex_digits="0123456789abcdef",
)
_PARAM_VALUE = st.one_of(st.none(), _chars(_UNRESERVED + "[]/:&+$"))


@st.composite
def sip_uris(draw: st.DrawFn) -> SipUri:
    user = draw(st.one_of(st.none(), _chars(_UNRESERVED + "&=+$,;?/", min_size=1)))
    password = None
    if user is not None:
        password = draw(st.one_of(st.none(), _chars(_UNRESERVED + "&=+$,")))
    return SipUri(
        scheme=draw(st.sampled_from(["sip", "sips"])),
        host=draw(_HOST),
        user=user,
        password=password,
        port=draw(st.one_of(st.none(), st.integers(1, 65535))),
        params=tuple(draw(st.lists(st.tuples(_PARAM_NAME, _PARAM_VALUE), max_size=4))),
        headers=tuple(
            draw(
                st.lists(
                    st.tuples(
                        _chars(_UNRESERVED + "[]/?:+$", min_size=1),
                        _chars(_UNRESERVED + "[]/?:+$"),
                    ),
                    max_size=3,
                )
            )
        ),
    )


@settings(max_examples=400)
@given(sip_uris())
def test_property_parse_of_str_is_identity(uri: SipUri) -> None:
    assert parse_uri(str(uri)) == uri


_DISPLAY = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), min_size=1)
_TOKEN = st.text(string.ascii_letters + string.digits + "-.!%*_+`'~", min_size=1, max_size=8)


@settings(max_examples=300)
@given(
    sip_uris(),
    st.one_of(st.none(), _DISPLAY),
    st.lists(st.tuples(_TOKEN.map(str.lower), st.one_of(st.none(), _TOKEN)), max_size=3),
)
def test_property_name_addr_round_trip(
    uri: SipUri, display: str | None, params: list[tuple[str, str | None]]
) -> None:
    value = NameAddr(uri, display, tuple(params))
    assert parse_name_addr(str(value)) == value
    assert parse_name_addr_list(f"{value}, {value}") == [value, value]


_SIPISH = st.lists(
    st.sampled_from(
        [
            *'sip:@;=?&%[]<>"\\,. -_/+$019afAF\t\u00e9',
            *("sip:", "sips:", "tel:", "::1", ":5060"),
            *(":\u00b2", ":\u0661\u0662"),  # str.isdigit() is true for these, int() may fail
        ]
    ),
    max_size=30,
).map("".join)


@settings(max_examples=500)
@given(
    st.one_of(
        st.text(max_size=60),
        _SIPISH,
        st.tuples(
            st.sampled_from(["sip:", "sips:a@h", "sip:a:b@host", "<sip:u@h", '"d" <sip:[::1]']),
            _SIPISH,
        ).map("".join),
    )
)
def test_property_parsers_raise_only_parse_error(text: str) -> None:
    for parse in (parse_uri, parse_name_addr, parse_name_addr_list, split_list):
        with contextlib.suppress(ParseError):
            parse(text)


def test_character_checks_match_their_character_sets() -> None:
    # The checks are regular expressions (one pass in C); they must take and refuse exactly
    # what the sets and str.isspace() say, for every character up to U+3100 (all of Unicode's
    # whitespace is below it).
    from siproc.sip import uri

    sets = (uri._USER_CHARS, uri._PASSWORD_CHARS, uri._PARAM_CHARS, uri._HEADER_CHARS)
    for n in range(0x3100):
        c = chr(n)
        token = c in uri.TOKEN_CHARS
        assert bool(uri._TOKEN_RE.fullmatch(c)) is token, c
        assert bool(uri._PARAM_VALUE_RE.fullmatch(c)) is (token or c in "[]:"), c
        assert bool(uri._DISPLAY_NAME_RE.fullmatch(c)) is (token or c.isspace()), c
        assert bool(uri._NOT_IN_URI_RE.search(c)) is (c.isspace() or c in '<>"'), c
        for allowed in sets:
            assert (uri._first_not_in(allowed).search(c) is None) is (c in allowed), (c, allowed)
    with pytest.raises(ParseError, match="invalid character '@' in user part"):
        uri._check_chars("ab@c", uri._USER_CHARS, "user part")

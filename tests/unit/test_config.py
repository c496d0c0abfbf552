"""Configuration from the environment: every SIPROC_ variable, its default and its errors."""

from __future__ import annotations

import logging
import os

import pytest

from siproc.config import (
    DEFAULT_LOG_LEVEL,
    DEFAULT_MAX_CALLS,
    DEFAULT_REGISTER_EXPIRES,
    DEFAULT_RTP_PORTS,
    DEFAULT_SIP_PORT,
    LOG_LEVELS,
    Config,
    ConfigError,
    load_config,
)
from siproc.sip.uri import NameAddr, SipUri, parse_name_addr, parse_sip_uri

REGISTRAR = {"SIPROC_REGISTRAR_URI": "sip:pbx.example.com", "SIPROC_USERNAME": "alice"}


def error(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(env)
    return info.value


def assert_error(env: dict[str, str], variable: str, *fragments: str) -> None:
    """One line that starts with the variable's name and says what is wrong."""
    exc = error(env)
    assert exc.variable == variable
    text = str(exc)
    assert text == f"{variable}: {exc.problem}"
    assert "\n" not in text
    assert text.count(variable) == 1, text  # named once, not "VAR: VAR ..."
    for fragment in fragments:
        assert fragment in text, text


# -- defaults --------------------------------------------------------------------------------


def test_empty_environment_gives_the_defaults() -> None:
    config = load_config({})
    assert config.registrar is None and config.identity is None
    assert config.username is None and config.password is None
    assert config.sip_port == DEFAULT_SIP_PORT == 5060
    assert config.bind_address is None and config.public_address is None
    assert config.rtp_ports == DEFAULT_RTP_PORTS == (10000, 20000)
    assert config.max_calls == DEFAULT_MAX_CALLS == 1000
    assert config.register_expires == DEFAULT_REGISTER_EXPIRES == 600
    assert config.log_level == DEFAULT_LOG_LEVEL == 3
    assert config.transport == "udp"
    priorities = {c.full_name: c.priority for c in config.codecs}
    assert priorities["PCMU/8000/1"] == 130 and priorities["PCMA/8000/1"] == 120


def test_blank_values_count_as_unset() -> None:
    blank = {
        name: "  "
        for name in (
            "SIPROC_REGISTRAR_URI",
            "SIPROC_ID_URI",
            "SIPROC_USERNAME",
            "SIPROC_TRANSPORT_PORT",
            "SIPROC_BIND_ADDRESS",
            "SIPROC_PUBLIC_ADDRESS",
            "SIPROC_RTP_PORTS",
            "SIPROC_MAX_CALLS",
            "SIPROC_REGISTER_EXPIRES",
            "SIPROC_LOG_LEVEL",
            "SIPROC_CODEC_PRIORITIES",
            "SIPROC_MEDIA_WORKERS",
            "SIPROC_MEDIA_PRIORITY",
            "SIPROC_MEDIA_IDLE",
        )
    }
    assert load_config(blank) == load_config({})


def test_other_variables_are_ignored() -> None:
    assert load_config({"PATH": "/bin", "SIPROC_REMOTE_URI": "x"}) == load_config({})


# -- SIPROC_REGISTRAR_URI ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "transport"),
    [
        ("sip:pbx.example.com", "udp"),
        (" sip:10.0.0.1:5080 ", "udp"),
        ("sip:[::1]:5062;transport=tcp", "tcp"),
        ("sip:pbx.example.com;transport=UDP", "udp"),
    ],
)
def test_registrar_uri_valid(text: str, transport: str) -> None:
    config = load_config({**REGISTRAR, "SIPROC_REGISTRAR_URI": text})
    assert config.registrar == parse_sip_uri(text.strip())
    assert config.transport == transport


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("pbx.example.com", "not a SIP URI"),
        ("http://pbx.example.com", "not a SIP URI"),
        ("sip:", "not a SIP URI"),
        ("sip:pbx example.com", "not a SIP URI"),
        ("sips:pbx.example.com;transport=udp", "a sips: URI is always TLS over TCP"),
        ("sip:pbx.example.com;transport=sctp", "transport=sctp is not supported"),
    ],
)
def test_registrar_uri_invalid(text: str, fragment: str) -> None:
    assert_error({**REGISTRAR, "SIPROC_REGISTRAR_URI": text}, "SIPROC_REGISTRAR_URI", fragment)


# -- SIPROC_ID_URI, SIPROC_USERNAME and the derived identity --------------------------------------


def test_identity_uri_valid_forms() -> None:
    config = load_config({"SIPROC_ID_URI": "Full Name <sip:Account@myserver.lan>"})
    assert config.identity == parse_name_addr("Full Name <sip:Account@myserver.lan>")
    assert config.username == "Account"  # the user of SIPROC_ID_URI
    config = load_config({"SIPROC_ID_URI": "sip:bob@example.com"})
    assert config.identity == NameAddr(SipUri("sip", "example.com", "bob"))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("<sip:broken", "not a SIP identity"),
        ('"unterminated <sip:a@b>', "not a SIP identity"),
        ("tel:+15551234", "must be a sip: or sips: URI"),
        ("Name <mailto:a@example.com>", "must be a sip: or sips: URI"),
    ],
)
def test_identity_uri_invalid(text: str, fragment: str) -> None:
    assert_error({"SIPROC_ID_URI": text}, "SIPROC_ID_URI", fragment)


def test_identity_is_derived_from_registrar_and_username() -> None:
    config = load_config(REGISTRAR)
    assert config.identity == NameAddr(SipUri("sip", "pbx.example.com", "alice"))
    assert str(config.identity) == "<sip:alice@pbx.example.com>"
    assert config.username == "alice"
    config = load_config({**REGISTRAR, "SIPROC_REGISTRAR_URI": "sip:10.0.0.1:5080;transport=tcp"})
    assert str(config.identity) == "<sip:alice@10.0.0.1:5080>"


def test_derived_identity_escapes_the_username() -> None:
    # RFC 3261 section 25.1: '@' and spaces cannot stand in a user part unescaped.
    config = load_config({**REGISTRAR, "SIPROC_USERNAME": "alice@example.com"})
    assert str(config.identity) == "<sip:alice%40example.com@pbx.example.com>"
    assert config.username == "alice@example.com"  # the digest name stays as given
    assert isinstance(config.identity, NameAddr)
    assert parse_name_addr(str(config.identity)) == config.identity  # and it parses back


def test_username_from_an_escaped_identity_is_unescaped() -> None:
    config = load_config({"SIPROC_ID_URI": "<sip:alice%40corp@pbx.example.com>"})
    assert config.username == "alice@corp"


def test_username_overrides_the_identity_user() -> None:
    config = load_config({"SIPROC_ID_URI": "<sip:100@pbx.example.com>", "SIPROC_USERNAME": "x9"})
    assert config.username == "x9"
    assert str(config.identity) == "<sip:100@pbx.example.com>"


def test_registrar_needs_an_identity_or_a_username() -> None:
    assert_error(
        {"SIPROC_REGISTRAR_URI": "sip:pbx.example.com"}, "SIPROC_ID_URI", "SIPROC_USERNAME"
    )


# -- SIPROC_PASSWORD -------------------------------------------------------------------------


def test_password_is_kept_but_never_shown() -> None:
    config = load_config({**REGISTRAR, "SIPROC_PASSWORD": "hunter2-secret"})
    assert config.password == "hunter2-secret"
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)
    assert "pbx.example.com" in repr(config)  # the repr is still useful
    assert "hunter2" not in repr([config]) and "hunter2" not in f"{config!r}"


def test_password_is_taken_as_is() -> None:
    config = load_config({**REGISTRAR, "SIPROC_PASSWORD": " spaced pass "})
    assert config.password == " spaced pass "  # a password may begin or end with blanks


def test_a_bad_value_error_never_contains_the_password() -> None:
    exc = error({**REGISTRAR, "SIPROC_PASSWORD": "hunter2", "SIPROC_MAX_CALLS": "x"})
    assert "hunter2" not in str(exc)


def test_config_is_frozen() -> None:
    config = load_config({})
    with pytest.raises(AttributeError):
        config.sip_port = 1  # type: ignore[misc]
    assert isinstance(config, Config)


# -- numbers ---------------------------------------------------------------------------------

NUMBERS = [
    # variable, attribute, low, high
    ("SIPROC_TRANSPORT_PORT", "sip_port", 0, 65535),
    ("SIPROC_MAX_CALLS", "max_calls", 1, 1_000_000),
    ("SIPROC_REGISTER_EXPIRES", "register_expires", 60, 86400),
    ("SIPROC_LOG_LEVEL", "log_level", 0, 6),
    ("SIPROC_MEDIA_WORKERS", "media_workers", 0, 64),
]


@pytest.mark.parametrize(("variable", "attribute", "low", "high"), NUMBERS)
def test_numbers_accept_their_range(variable: str, attribute: str, low: int, high: int) -> None:
    for value in (low, high, (low + high) // 2):
        assert getattr(load_config({variable: str(value)}), attribute) == value
    assert getattr(load_config({variable: f" {low} "}), attribute) == low


@pytest.mark.parametrize(("variable", "attribute", "low", "high"), NUMBERS)
@pytest.mark.parametrize(
    "bad", ["below", "above", "-1", "abc", "5 0", "1.5", "0x10", "²", "\uff15", "9" * 5000]
)
def test_numbers_reject_the_rest(
    variable: str, attribute: str, low: int, high: int, bad: str
) -> None:
    value = {"below": str(low - 1), "above": str(high + 1)}.get(bad, bad)
    if value == "-1" and low > 0:
        value = "-5"
    assert_error({variable: value}, variable, f"from {low} to {high}")


def test_log_format_is_text_or_json() -> None:
    assert load_config({}).log_format == "text"
    assert load_config({"SIPROC_LOG_FORMAT": " JSON "}).log_format == "json"
    assert_error({"SIPROC_LOG_FORMAT": "yaml"}, "SIPROC_LOG_FORMAT", "text, json")


def test_log_levels_map_to_logging() -> None:
    assert LOG_LEVELS[0] == logging.CRITICAL and LOG_LEVELS[3] == logging.INFO
    assert LOG_LEVELS[6] == logging.DEBUG and sorted(LOG_LEVELS) == list(range(7))


# -- addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("[::1]", "::1"), ("0:0::1", "::1")],
)
def test_bind_address_valid(text: str, expected: str) -> None:
    assert load_config({"SIPROC_BIND_ADDRESS": text}).bind_address == expected


@pytest.mark.parametrize("text", ["localhost", "1.2.3.4.5", "127.0.0.1:5060", "256.0.0.1"])
def test_bind_address_invalid(text: str) -> None:
    assert_error({"SIPROC_BIND_ADDRESS": text}, "SIPROC_BIND_ADDRESS", "IP address", repr(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("sip.example.com", "sip.example.com"),
    ],
)
def test_public_address_valid(text: str, expected: str) -> None:
    assert load_config({"SIPROC_PUBLIC_ADDRESS": text}).public_address == expected


@pytest.mark.parametrize("text", ["203.0.113.7:5060", "bad host", "a_b.example.com", "x;y"])
def test_public_address_invalid(text: str) -> None:
    # It goes into Via, Contact and SDP: something that cannot stand there is refused now.
    assert_error({"SIPROC_PUBLIC_ADDRESS": text}, "SIPROC_PUBLIC_ADDRESS", repr(text))


# -- SIPROC_RTP_PORTS ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20000-30000", (20000, 30000)),
        (" 1024 - 1027 ", (1024, 1027)),
        ("60000-65535", (60000, 65535)),
    ],
)
def test_rtp_ports_valid(text: str, expected: tuple[int, int]) -> None:
    assert load_config({"SIPROC_RTP_PORTS": text}).rtp_ports == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("10000", "range like 10000-20000"),
        ("a-b", "range like 10000-20000"),
        ("10000-", "range like 10000-20000"),
        ("-10000", "range like 10000-20000"),
        ("10000:20000", "range like 10000-20000"),
        ("²-³", "range like 10000-20000"),
        ("20000-10000", "at least 4 ports"),
        ("1000-2000", "at least 4 ports"),  # below 1024
        ("10000-70000", "at least 4 ports"),
        ("10000-10002", "at least 4 ports"),  # RTP/RTCP pairs need room
    ],
)
def test_rtp_ports_invalid(text: str, fragment: str) -> None:
    assert_error({"SIPROC_RTP_PORTS": text}, "SIPROC_RTP_PORTS", fragment)


# -- SIPROC_CODEC_PRIORITIES -----------------------------------------------------------------


def test_codec_priorities_apply() -> None:
    config = load_config({"SIPROC_CODEC_PRIORITIES": "PCMA:200, pcmu:0"})
    priorities = {c.full_name: c.priority for c in config.codecs}
    assert priorities["PCMA/8000/1"] == 200 and priorities["PCMU/8000/1"] == 0
    enabled = [c.full_name for c in config.codecs if c.enabled]
    assert "PCMU/8000/1" not in enabled and "PCMA/8000/1" in enabled


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("pcmu", "is not <name>:<priority>"),
        (":5", "is not <name>:<priority>"),
        ("PCMU:300", "not an integer 0-255"),
        ("PCMU:high", "not an integer 0-255"),
        ("PCMU:-1", "not an integer 0-255"),
        ("foo:1", "matches no codec"),
        ("PCMU:0,PCMA:0,G722:0,opus:0", "disables every usable audio codec"),
        ("PCM:0,G7:0,o:0", "disables every usable audio codec"),  # a prefix matches several
    ],
)
def test_codec_priority_errors_become_config_errors(text: str, fragment: str) -> None:
    assert_error({"SIPROC_CODEC_PRIORITIES": text}, "SIPROC_CODEC_PRIORITIES", fragment)


def test_telephone_event_alone_is_not_enough() -> None:
    assert_error(
        {"SIPROC_CODEC_PRIORITIES": "PCMU:0,PCMA:0,G722:0,opus:0,telephone-event:200"},
        "SIPROC_CODEC_PRIORITIES",
        "disables every usable audio codec",
    )


def test_media_workers_default_to_one_per_cpu_and_priority_to_realtime() -> None:
    config = load_config({})
    assert config.media_workers == min(64, max(1, len(os.sched_getaffinity(0))))
    assert config.media_priority == "realtime"
    assert load_config({"SIPROC_MEDIA_PRIORITY": " Normal "}).media_priority == "normal"


def test_media_workers_idle_time() -> None:
    assert load_config({}).media_idle == 30.0
    assert load_config({"SIPROC_MEDIA_IDLE": "0"}).media_idle == 0.0  # start all, stop none
    assert load_config({"SIPROC_MEDIA_IDLE": "2.5"}).media_idle == 2.5
    exc = error({"SIPROC_MEDIA_IDLE": "-1"})
    assert exc.variable == "SIPROC_MEDIA_IDLE"


def test_a_bad_media_priority_names_the_variable_and_the_choices() -> None:
    exc = error({"SIPROC_MEDIA_PRIORITY": "urgent"})
    assert exc.variable == "SIPROC_MEDIA_PRIORITY"
    assert "realtime, high, normal" in str(exc) and "'urgent'" in str(exc)


# --- inbound policy, REFER, limits, T1 (siproc(1) SECURITY and LIMITS) ------------------------


def test_inbound_defaults_follow_the_registrar() -> None:
    assert load_config({}).inbound.open
    policy = load_config(REGISTRAR).inbound
    assert policy.registrar and not policy.open and policy.reject == 403


def test_inbound_networks_and_drop() -> None:
    config = load_config(
        {"SIPROC_INBOUND": "10.0.0.0/8, 2001:db8::/32,192.0.2.7", "SIPROC_INBOUND_REJECT": "drop"}
    )
    assert [str(n) for n in config.inbound.networks] == [
        "10.0.0.0/8",
        "2001:db8::/32",
        "192.0.2.7/32",
    ]
    assert config.inbound.reject is None
    assert load_config({**REGISTRAR, "SIPROC_INBOUND": "any"}).inbound.open


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({"SIPROC_INBOUND": "10.0.0.0/33"}, "SIPROC_INBOUND", "'10.0.0.0/33'"),
        ({"SIPROC_INBOUND": "everyone"}, "SIPROC_INBOUND", "registrar, any"),
        ({"SIPROC_INBOUND": "registrar"}, "SIPROC_INBOUND", "SIPROC_REGISTRAR_URI is not set"),
        ({"SIPROC_INBOUND_REJECT": "404"}, "SIPROC_INBOUND_REJECT", "403 or drop"),
        ({"SIPROC_ACCEPT_REFER": "maybe"}, "SIPROC_ACCEPT_REFER", "yes, no, or patterns"),
        ({"SIPROC_CALL_RATE": "fast"}, "SIPROC_CALL_RATE", "'fast'"),
        ({"SIPROC_CALL_RATE": "nan"}, "SIPROC_CALL_RATE", "from 0.01"),
        ({"SIPROC_CALL_BURST": "0"}, "SIPROC_CALL_BURST", "from 1"),
        ({"SIPROC_SPAWN_RATE": "-1"}, "SIPROC_SPAWN_RATE", "'-1'"),
        ({"SIPROC_RING_TIMEOUT": "2m"}, "SIPROC_RING_TIMEOUT", "whole number"),
        ({"SIPROC_MAX_CALL_DURATION": "1e9"}, "SIPROC_MAX_CALL_DURATION", "whole number"),
        ({"SIPROC_TIMER_T1": "10"}, "SIPROC_TIMER_T1", "from 50 to 5000"),
    ],
)
def test_policy_and_limit_errors_name_the_variable(
    env: dict[str, str], variable: str, fragment: str
) -> None:
    assert_error(env, variable, fragment)


def test_accept_refer() -> None:
    assert load_config({}).accept_refer is True
    assert load_config({"SIPROC_ACCEPT_REFER": "No"}).accept_refer is False
    patterns = load_config({"SIPROC_ACCEPT_REFER": "sip:*@pbx.example.com, sip:1??@*"})
    assert patterns.accept_refer == ("sip:*@pbx.example.com", "sip:1??@*")


def test_limits_and_t1() -> None:
    config = load_config({})
    assert (config.limits.call_rate, config.limits.call_burst) == (10.0, 20)
    assert config.limits.ring_timeout == 120 and config.limits.rtp_timeout == 0
    assert config.limits.max_call_duration == 86400 and config.timer_t1 == 0.5
    config = load_config(
        {
            "SIPROC_CALL_RATE": "2.5",
            "SIPROC_CALL_BURST": "3",
            "SIPROC_SPAWN_RATE": "50",
            "SIPROC_RING_TIMEOUT": "0",
            "SIPROC_MAX_CALL_DURATION": "3600",
            "SIPROC_TIMER_T1": "100",
        }
    )
    assert (config.limits.call_rate, config.limits.call_burst) == (2.5, 3)
    assert config.limits.spawn_rate == 50 and config.limits.ring_timeout == 0
    assert config.limits.max_call_duration == 3600 and config.timer_t1 == 0.1


# -- limits of the SIP listener ------------------------------------------------------------------


def test_listener_limits_default_to_safe_values() -> None:
    config = load_config({})
    assert config.max_message_size == 65_536
    assert config.tcp_max_per_source == 32
    assert config.tcp_message_timeout == 10.0
    assert config.tcp_idle_timeout == 600.0
    blank = {
        "SIPROC_MAX_MESSAGE_SIZE": " ",
        "SIPROC_TCP_MAX_PER_SOURCE": "",
        "SIPROC_TCP_MESSAGE_TIMEOUT": " ",
        "SIPROC_TCP_IDLE_TIMEOUT": "",
    }
    assert load_config(blank) == config


def test_listener_limits_are_read() -> None:
    config = load_config(
        {
            "SIPROC_MAX_MESSAGE_SIZE": "4096",
            "SIPROC_TCP_MAX_PER_SOURCE": "4",
            "SIPROC_TCP_MESSAGE_TIMEOUT": "2.5",
            "SIPROC_TCP_IDLE_TIMEOUT": "120",
        }
    )
    assert config.max_message_size == 4096
    assert config.tcp_max_per_source == 4
    assert config.tcp_message_timeout == 2.5
    assert config.tcp_idle_timeout == 120.0


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("SIPROC_MAX_MESSAGE_SIZE", "100", "1500 to 1048576"),
        ("SIPROC_MAX_MESSAGE_SIZE", "64k", "whole number"),
        ("SIPROC_TCP_MAX_PER_SOURCE", "0", "from 1"),
        ("SIPROC_TCP_MESSAGE_TIMEOUT", "0", "seconds from 0.1"),
        ("SIPROC_TCP_MESSAGE_TIMEOUT", "1e3", "seconds"),
        ("SIPROC_TCP_IDLE_TIMEOUT", "nan", "seconds from 1 to 86400"),
        ("SIPROC_TCP_IDLE_TIMEOUT", "-5", "'-5'"),
    ],
)
def test_bad_listener_limits_name_the_variable(variable: str, value: str, fragment: str) -> None:
    assert_error({variable: value}, variable, fragment)


def test_srtp_mode() -> None:
    from siproc.sdp.sdes import SrtpMode

    assert load_config({}).srtp is SrtpMode.OFF
    assert load_config({"SIPROC_SRTP": " Mandatory "}).srtp is SrtpMode.MANDATORY
    assert load_config({"SIPROC_SRTP": "optional"}).srtp is SrtpMode.OPTIONAL
    assert load_config({"SIPROC_SRTP": ""}).srtp is SrtpMode.OFF
    exc = error({"SIPROC_SRTP": "yes"})
    assert exc.variable == "SIPROC_SRTP"
    assert "off, optional, mandatory" in str(exc) and "'yes'" in str(exc)


def test_register_retry_and_user_agent() -> None:
    config = load_config({})
    assert config.register_retry == 30
    assert config.user_agent == "siproc"  # no version for strangers to look up
    config = load_config({"SIPROC_REGISTER_RETRY": "2", "SIPROC_USER_AGENT": " acme-door/2 "})
    assert config.register_retry == 2 and config.user_agent == "acme-door/2"
    assert_error({"SIPROC_REGISTER_RETRY": "0"}, "SIPROC_REGISTER_RETRY", "1 to 900")
    assert_error({"SIPROC_REGISTER_RETRY": "901"}, "SIPROC_REGISTER_RETRY", "1 to 900")
    assert_error({"SIPROC_USER_AGENT": "a\r\nVia: x"}, "SIPROC_USER_AGENT", "printable")
    assert_error({"SIPROC_USER_AGENT": "x" * 201}, "SIPROC_USER_AGENT", "200")


def test_tls_defaults_and_variables(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.tls_certs import make_pki

    config = load_config({})
    assert config.tls.verify and config.tls.ca_file is None and not config.tls.listens
    assert config.tls.port == 5061
    assert not config.srtp_insecure_signalling
    pki = make_pki(tmp_path / "pki")
    config = load_config(
        {
            "SIPROC_TLS_CA_FILE": str(pki.ca),
            "SIPROC_TLS_CERT_FILE": str(pki.cert),
            "SIPROC_TLS_KEY_FILE": str(pki.key),
            "SIPROC_TLS_PORT": "5071",
            "SIPROC_TLS_VERIFY": "NO",
            "SIPROC_SRTP_INSECURE_SIGNALLING": "yes",
        }
    )
    assert config.tls.ca_file == str(pki.ca) and config.tls.listens and config.tls.port == 5071
    assert not config.tls.verify and config.srtp_insecure_signalling
    assert_error({"SIPROC_TLS_VERIFY": "maybe"}, "SIPROC_TLS_VERIFY", "yes or no")
    assert_error({"SIPROC_TLS_CERT_FILE": str(pki.cert)}, "SIPROC_TLS_KEY_FILE", "needed")
    assert_error({"SIPROC_TLS_KEY_FILE": str(pki.key)}, "SIPROC_TLS_CERT_FILE", "needed")
    # The files themselves are loaded by the CLI (net.tls.check_files): tests/unit/test_cli.py.
    assert load_config({"SIPROC_TLS_CA_FILE": str(tmp_path / "x")}).tls.ca_file
    assert_error({"SIPROC_TLS_PORT": "70000"}, "SIPROC_TLS_PORT", "0 to 65535")
    assert_error(
        {"SIPROC_SRTP_INSECURE_SIGNALLING": "sure"}, "SIPROC_SRTP_INSECURE_SIGNALLING", "yes or no"
    )


@pytest.mark.parametrize(
    "uri",
    ["sips:pbx.example.com", "sip:pbx.example.com;transport=tls", "sips:pbx:5071;transport=tcp"],
)
def test_a_tls_registrar_is_accepted(uri: str) -> None:
    config = load_config({"SIPROC_REGISTRAR_URI": uri, "SIPROC_USERNAME": "alice"})
    assert config.transport == "tls"


def test_cdr_and_metrics_are_off_by_default() -> None:
    config = load_config({})
    assert config.cdr is None and config.metrics is None


def test_cdr_is_a_file_name(tmp_path: object) -> None:
    assert load_config({"SIPROC_CDR": f"{tmp_path}/cdr.jsonl"}).cdr == f"{tmp_path}/cdr.jsonl"
    assert error({"SIPROC_CDR": str(tmp_path)}).variable == "SIPROC_CDR"
    assert "directory" in error({"SIPROC_CDR": f"{tmp_path}/"}).problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9100", ("127.0.0.1", 9100)),
        (":9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
    ],
)
def test_metrics_address(text: str, expected: tuple[str, int]) -> None:
    assert load_config({"SIPROC_METRICS": text}).metrics == expected


@pytest.mark.parametrize("text", ["localhost:9100", "127.0.0.1", "1.2.3.4:99999", "::1:x", "a:b"])
def test_metrics_address_invalid(text: str) -> None:
    exc = error({"SIPROC_METRICS": text})
    assert exc.variable == "SIPROC_METRICS" and "ADDRESS:PORT" in exc.problem


def test_drain_timeout() -> None:
    assert load_config({}).drain_timeout == 0.0  # wait for the calls however long they last
    assert load_config({"SIPROC_DRAIN_TIMEOUT": " "}).drain_timeout == 0.0
    assert load_config({"SIPROC_DRAIN_TIMEOUT": "90"}).drain_timeout == 90.0
    assert load_config({"SIPROC_DRAIN_TIMEOUT": "2.5"}).drain_timeout == 2.5


@pytest.mark.parametrize("value", ["-1", "soon", "1e3", "nan", "31536001", "5s"])
def test_bad_drain_timeout_names_the_variable(value: str) -> None:
    assert_error({"SIPROC_DRAIN_TIMEOUT": value}, "SIPROC_DRAIN_TIMEOUT", "seconds from 0 to")


def test_instance_id() -> None:
    uuid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert load_config({}).instance_id is None
    assert load_config({"SIPROC_INSTANCE_ID": uuid}).instance_id == f"urn:uuid:{uuid}"
    upper = {"SIPROC_INSTANCE_ID": f" URN:UUID:{uuid.upper()} "}
    assert load_config(upper).instance_id == f"urn:uuid:{uuid}"


@pytest.mark.parametrize(
    "value",
    [
        "host-1",
        "urn:uuid:",
        "0f8fad5bd9cb469fa16570867728950e",  # no dashes: not the RFC 4122 string form
        "{0f8fad5b-d9cb-469f-a165-70867728950e}",
        '0f8fad5b-d9cb-469f-a165-70867728950e>;x="',
    ],
)
def test_bad_instance_id_names_the_variable(value: str) -> None:
    assert_error({"SIPROC_INSTANCE_ID": value}, "SIPROC_INSTANCE_ID", "must be a UUID")


def test_audio_fds_is_off_unless_asked_for() -> None:
    assert load_config({}).audio_fds is False
    assert load_config({"SIPROC_AUDIO_FDS": "yes"}).audio_fds is True
    assert load_config({"SIPROC_AUDIO_FDS": "0"}).audio_fds is False
    exc = error({"SIPROC_AUDIO_FDS": "3,4"})
    assert exc.variable == "SIPROC_AUDIO_FDS" and "yes or no" in str(exc)

"""Codec catalogue and SIPROC_CODEC_PRIORITIES (siproc.media.codecs.catalog)."""

from __future__ import annotations

import pytest

from siproc.media.codecs.catalog import (
    KNOWN_CODECS,
    CodecEntry,
    CodecPriorityError,
    apply_priorities,
    codec_availability,
    default_entries,
    enabled_codecs,
    telephone_event_spec,
)
from siproc.sdp.offer_answer import CodecSpec

PCMU = CodecSpec("PCMU", 8000, 1, 0)
PCMA = CodecSpec("PCMA", 8000, 1, 8)
G722 = CodecSpec("G722", 8000, 1, 9)
OPUS = CodecSpec("opus", 48000, 2, 96, "useinbandfec=1")
TE = CodecSpec("telephone-event", 8000, 1, 101, "0-16")

#: As if every library were there and every codec implemented: tests prefix matching and
#: ordering independently of this machine.
ALL_USABLE = {name: (True, "test") for name in KNOWN_CODECS}


def names(specs: list[CodecSpec]) -> list[str]:
    return [s.name for s in specs]


def priorities(entries: list[CodecEntry]) -> dict[str, int]:
    return {e.full_name: e.priority for e in entries}


def test_known_names() -> None:
    assert list(KNOWN_CODECS) == [
        "PCMU/8000/1",
        "PCMA/8000/1",
        "G722/16000/1",
        "opus/48000/2",
        "telephone-event/8000/1",
    ]
    assert KNOWN_CODECS["G722/16000/1"] == G722  # 8000 in SDP (RFC 3551 section 4.5.2)
    assert KNOWN_CODECS["opus/48000/2"].rtpmap == "96 opus/48000/2"


def test_default_order_with_every_library() -> None:
    # The test machines (and CI) have the g722 package and libopus: everything is usable.
    entries = apply_priorities("")
    assert [e.full_name for e in entries] == list(KNOWN_CODECS)
    assert enabled_codecs(entries) == [OPUS, G722, PCMU, PCMA]
    assert telephone_event_spec(entries) == TE


def test_g722_and_opus_are_usable_here() -> None:
    availability = codec_availability()
    assert availability == codec_availability()  # cached: probed once
    for name in KNOWN_CODECS:
        usable, reason = availability[name]
        assert usable, f"{name}: {reason}"
    assert availability["G722/16000/1"][1].startswith("G.722 64 kbit/s, g722 package")
    assert availability["opus/48000/2"][1].startswith("Opus 48 kHz mono, libopus ")


def test_a_codec_without_its_library_is_listed_with_the_reason_but_never_offered() -> None:
    missing = {
        **ALL_USABLE,
        "G722/16000/1": (False, "the g722 Python package is not installed"),
        "opus/48000/2": (False, "libopus not found"),
    }
    entries = apply_priorities("G722:255,opus:255", availability=missing)
    assert enabled_codecs(entries) == [PCMU, PCMA]
    g722 = next(e for e in entries if e.full_name == "G722/16000/1")
    assert g722.priority == 255
    assert not g722.enabled
    assert g722.describe() == (
        "G722/16000/1:255 unavailable (the g722 Python package is not installed)"
    )


def test_pcma_first_and_pcmu_disabled() -> None:
    entries = apply_priorities("PCMA:200,PCMU:0")
    assert enabled_codecs(entries) == [PCMA, OPUS, G722]  # 200 beats the defaults 140, 135
    assert priorities(entries)["PCMU/8000/1"] == 0
    pcmu = next(e for e in entries if e.full_name == "PCMU/8000/1")
    assert pcmu.usable
    assert not pcmu.enabled
    assert pcmu.describe().startswith("PCMU/8000/1:0 disabled")


@pytest.mark.parametrize("name", ["pcmu", "PCMU/8000", "Pcmu/8000/1", "PCMU/8000/1"])
def test_prefix_matching_is_case_insensitive(name: str) -> None:
    assert priorities(apply_priorities(f"{name}:7"))["PCMU/8000/1"] == 7


def test_a_prefix_matching_several_applies_to_all() -> None:
    got = priorities(apply_priorities("PCM:5", availability=ALL_USABLE))
    assert got["PCMU/8000/1"] == 5
    assert got["PCMA/8000/1"] == 5
    got = priorities(apply_priorities("G7:3", availability=ALL_USABLE))
    assert got["G722/16000/1"] == 3


def test_sorting_is_by_priority_then_catalogue_order() -> None:
    entries = apply_priorities("G722:250, pcma:250 , opus:0", availability=ALL_USABLE)
    assert names(enabled_codecs(entries)) == ["PCMA", "G722", "PCMU"]
    entries = apply_priorities("PCMU:100,PCMA:100", availability=ALL_USABLE)
    assert names(enabled_codecs(entries)) == ["opus", "G722", "PCMU", "PCMA"]


def test_later_entries_override_and_empty_items_are_ignored() -> None:
    entries = apply_priorities(",PCMU:10,,PCMU:20,", availability=ALL_USABLE)
    assert priorities(entries)["PCMU/8000/1"] == 20


def test_telephone_event_can_be_disabled() -> None:
    entries = apply_priorities("telephone-event:0")
    assert telephone_event_spec(entries) is None
    assert enabled_codecs(entries) == [OPUS, G722, PCMU, PCMA]  # never among the audio codecs
    assert telephone_event_spec(apply_priorities("tel:1")) == TE


def test_unknown_name() -> None:
    with pytest.raises(CodecPriorityError) as info:
        apply_priorities("PCMA:200,G729:100")
    text = str(info.value)
    assert "'G729:100'" in text
    assert "matches no codec" in text
    for name in KNOWN_CODECS:
        assert name in text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("PCMU", "is not <name>:<priority>"),
        (":100", "is not <name>:<priority>"),
        ("PCMU:", "priority '' is not an integer 0-255"),
        ("PCMU:high", "priority 'high' is not an integer 0-255"),
        ("PCMU:256", "priority '256' is not an integer 0-255"),
        ("PCMU:-1", "priority '-1' is not an integer 0-255"),
        ("PCMU:1.5", "priority '1.5' is not an integer 0-255"),
        ("PCMU:\u0661", "is not an integer 0-255"),  # an Arabic-Indic digit
        ("PCMU/16000:1", "matches no codec"),
    ],
)
def test_bad_entries(spec: str, message: str) -> None:
    with pytest.raises(CodecPriorityError, match="SIPROC_CODEC_PRIORITIES") as info:
        apply_priorities(spec)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_availability_is_injectable_and_defaults_for_unknown() -> None:
    entries = default_entries({"PCMA/8000/1": (True, "ok")})
    usable = {e.full_name: e.usable for e in entries}
    assert usable == {name: name == "PCMA/8000/1" for name in KNOWN_CODECS}
    assert enabled_codecs(entries) == [PCMA]
    assert telephone_event_spec(entries) is None


def test_entry_spec_and_describe() -> None:
    entry = CodecEntry("PCMU/8000/1", 130, True, "built in")
    assert entry.spec == PCMU
    assert entry.describe() == "PCMU/8000/1:130 enabled (built in)"

"""The simulator's script language (siproc/sim/script.py): steps, and one-line errors that name
the script line."""

from __future__ import annotations

import pytest

from siproc.sim.script import (
    DEFAULT_WITHIN,
    Audio,
    CallStep,
    Expect,
    ExpectExit,
    FarEnd,
    Keys,
    ScriptError,
    TextMessage,
    Wait,
    parse_script,
)


def test_a_whole_script() -> None:
    script = parse_script(
        """
        # an IVR
        header X-Ticket: 42
        call from "Alice" <sip:alice@example.com> to sip:ivr@example.com
        expect ANSWER within 2s
        expect play menu.wav
        dtmf 1 2 3
        dtmf 4#
        message hello there
        audio tone 440 3s
        audio silence 500ms
        audio file greeting.wav
        wait 1.5
        hold
        resume
        expect exit 0 within 3s
        expect exit
        expect SAY Sorry, *option 9.
        expect no HANGUP within 1s
        hangup
        """,
        "ivr.sim",
    )
    call = script.call
    assert isinstance(call, CallStep) and call.incoming and call.line == 4
    assert str(call.remote.uri) == "sip:alice@example.com"
    assert call.remote.display_name == "Alice"
    assert call.local_uri == "sip:ivr@example.com" and call.headers == (("X-Ticket", "42"),)
    steps = script.steps[1:]
    assert steps[0] == Expect(5, "expect ANSWER within 2s", "ANSWER", None, 2.0)
    assert steps[1] == Expect(6, "expect play menu.wav", "PLAY", "menu.wav", DEFAULT_WITHIN)
    assert steps[2] == Keys(7, "dtmf 1 2 3", "123")
    assert steps[3] == Keys(8, "dtmf 4#", "4#")
    assert steps[4] == TextMessage(9, "message hello there", "hello there")
    assert steps[5] == Audio(10, "audio tone 440 3s", "tone", 3.0, 440.0)
    assert steps[6] == Audio(11, "audio silence 500ms", "silence", 0.5)
    assert steps[7] == Audio(12, "audio file greeting.wav", "file", file="greeting.wav")
    assert steps[8] == Wait(13, "wait 1.5", 1.5)
    assert [s.action for s in steps[9:11] if isinstance(s, FarEnd)] == ["hold", "resume"]
    assert steps[11] == ExpectExit(16, "expect exit 0 within 3s", 0, 3.0)
    assert steps[12] == ExpectExit(17, "expect exit", None, DEFAULT_WITHIN)
    assert steps[13] == Expect(
        18, "expect SAY Sorry, *option 9.", "SAY", "Sorry, *option 9.", DEFAULT_WITHIN
    )
    assert steps[14] == Expect(19, "expect no HANGUP within 1s", "HANGUP", None, 1.0, True)
    assert script.expects_exit


def test_an_outgoing_call_and_its_far_end() -> None:
    script = parse_script("call to sip:bob@example.com\nringing\nprogress\nanswer\nreject\n")
    assert not script.call.incoming
    assert [s.action for s in script.steps[1:] if isinstance(s, FarEnd)] == [
        "ringing",
        "progress",
        "answer",
        "reject",
    ]
    reject = parse_script("call to sip:bob@example.com\nreject 603 Not today").steps[1]
    assert reject == FarEnd(2, "reject 603 Not today", "reject", 603, "Not today")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "t.sim:1: empty script"),
        ("expect ANSWER", "t.sim:1: the script must start with `call from <uri>`"),
        ("call from alice", "t.sim:1: caller 'alice' is not a SIP URI"),
        ("call sip:a@b", "t.sim:1: say `call from <uri>` (incoming) or `call to <uri>`"),
        ("call from sip:a@b\ndail 1", "t.sim:2: unknown step 'dail' (steps: header, call,"),
        ("call from sip:a@b\nexpect ANSWER within", "t.sim:2: within needs a time"),
        ("call from sip:a@b\nexpect ANSWER within 2x", "t.sim:2: within must be a time such"),
        ("call from sip:a@b\nexpect ANSWER within 2 s", "t.sim:2: `within T` must end the line"),
        ("call from sip:a@b\nexpect", "t.sim:2: expect what?"),
        ("call from sip:a@b\nexpect no within 1s", "t.sim:2: expect no what?"),
        ("call from sip:a@b\nexpect exit soon", "t.sim:2: say `expect exit [STATUS]"),
        ("call from sip:a@b\n\n# c\ndtmf 1 x", "t.sim:4: dtmf takes keys 0-9 * # A-D"),
        ("call from sip:a@b\nwait", "t.sim:2: say `wait T`"),
        ("call from sip:a@b\nwait 2h", "t.sim:2: wait must be a time"),
        ("call from sip:a@b\nwait 7200s", "t.sim:2: wait '7200s' is over 3600 s"),
        ("call from sip:a@b\naudio tone 9000 1s", "t.sim:2: tone frequency must be 20-3900"),
        ("call from sip:a@b\naudio noise", "t.sim:2: say `audio tone 440 3s`"),
        ("call from sip:a@b\nanswer", "t.sim:2: answer is what the far end of an outgoing"),
        ("call from sip:a@b\nhangup now", "t.sim:2: hangup takes nothing after it"),
        ("call from sip:a@b\ncall from sip:c@d", "t.sim:2: one call per script"),
        ("call from sip:a@b\nheader X-A: 1", "t.sim:2: header lines go before"),
        ("header Subject: hi\ncall from sip:a@b", "t.sim:1: say `header X-Name: value`"),
        ("header X-A: 1\ncall to sip:a@b", "t.sim:2: header lines are for incoming calls"),
        ("call to sip:a@b\nreject 200", "t.sim:2: status must be 300-699"),
        ("call from sip:a@b\nmessage", "t.sim:2: message needs a text"),
    ],
)
def test_mistakes_are_one_line_naming_the_script_line(text: str, error: str) -> None:
    with pytest.raises(ScriptError) as info:
        parse_script(text, "t.sim")
    assert str(info.value).startswith(error), str(info.value)
    assert "\n" not in str(info.value)

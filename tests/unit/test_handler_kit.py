"""The handler kit (siproc/handler.py) over real pipes: environment, typed events, commands as
lines, waiting, the end of a call, SIGTERM; blocking and asyncio flavours."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from siproc.calls.protocol import (
    Connected,
    Disconnected,
    DtmfReceived,
    ErrorEvent,
    Gathered,
    MessageReceived,
    Stopped,
)
from siproc.handler import (
    AsyncCall,
    Call,
    CallEnded,
    CallInfo,
    CommandFailed,
    Terminated,
    UnknownEvent,
    parse_event,
)

INFO = CallInfo(call_id="abc@host", outgoing=False, remote_uri="sip:alice@example.com")


class Pipes:
    """The handler's stdin (we write events) and stdout (we read commands)."""

    def __init__(self) -> None:
        self.stdin_r, self.stdin_w = os.pipe()
        self.stdout_r, self.stdout_w = os.pipe()

    def events(self, *lines: str) -> None:
        os.write(self.stdin_w, "".join(line + "\n" for line in lines).encode())

    def eof(self) -> None:
        os.close(self.stdin_w)
        self.stdin_w = -1

    def commands(self) -> list[str]:
        os.set_blocking(self.stdout_r, False)
        try:
            return os.read(self.stdout_r, 65536).decode().splitlines()
        except BlockingIOError:
            return []

    def close(self) -> None:
        for fd in (self.stdin_r, self.stdin_w, self.stdout_r, self.stdout_w):
            if fd >= 0:
                os.close(fd)


@pytest.fixture
def pipes() -> Iterator[Pipes]:
    p = Pipes()
    yield p
    p.close()


def call_on(pipes: Pipes) -> Call:
    return Call(INFO, stdin=pipes.stdin_r, stdout=pipes.stdout_w)


def test_environment_becomes_call_info() -> None:
    info = CallInfo.from_environ(
        {
            "SIPROC_CALL_ID": "abc@host",
            "SIPROC_OUTGOING": "y",
            "SIPROC_REMOTE_URI": "sip:bob@example.com",
            "SIPROC_REMOTE_ID": '"Bob" <sip:bob@example.com>',
            "SIPROC_REMOTE_DISPLAY_NAME": "Bob",
            "SIPROC_REMOTE_USER": "bob",
            "SIPROC_LOCAL_URI": "sip:me@example.com",
            "SIPROC_REQUEST_URI": "sip:bob@example.com",
            "SIPROC_HEADER_X_TICKET": "42",
            "PATH": "/bin",
        }
    )
    assert info.outgoing and info.call_id == "abc@host" and info.remote_display_name == "Bob"
    assert info.headers == {"X_TICKET": "42"} and info.referred_by is None
    with pytest.raises(ValueError, match="SIPROC_CALL_ID is not set"):
        CallInfo.from_environ({"PATH": "/bin"})


def test_events_are_siprocs_own_types() -> None:
    assert parse_event("CONNECTED") == Connected()
    assert parse_event("DTMF 5\n") == DtmfReceived("5")
    assert parse_event("MESSAGE hi\\nthere") == MessageReceived("hi\nthere")
    assert parse_event("DISCONNECTED 487 cancelled") == Disconnected(487, "cancelled")
    assert parse_event("GATHERED 12 finish") == Gathered("12", "finish")
    assert parse_event("GATHERED - timeout") == Gathered("", "timeout")
    assert parse_event("GATHERED 12 later") == UnknownEvent("GATHERED 12 later")
    assert parse_event("SPOKEN hello") == UnknownEvent("SPOKEN hello")


def test_commands_are_written_as_protocol_lines(pipes: Pipes) -> None:
    call = call_on(pipes)
    call.ringing()
    call.answer()
    call.play("menu.wav")
    call.record("out.wav", stereo=True)
    call.record(None)
    call.dtmf("12#")
    call.message("two\nlines")
    call.say("Hello, caller")
    call.transfer("sip:desk@example.com")
    call.hangup(486)
    call.hangup()
    assert pipes.commands() == [
        "RINGING",
        "ANSWER",
        "PLAY menu.wav",
        "RECORD out.wav stereo",
        "RECORD",
        "DTMF 12#",
        "MESSAGE two\\nlines",
        "SAY Hello, caller",
        "TRANSFER sip:desk@example.com",
        "HANGUP 486",
        "HANGUP",
    ]
    with pytest.raises(ValueError, match="invalid DTMF"):
        call.dtmf("x")
    with pytest.raises(ValueError, match="CR or LF"):
        call.send("PLAY a\nHANGUP")


def test_play_and_wait_keeps_other_events_for_later(pipes: Pipes) -> None:
    call = call_on(pipes)
    pipes.events("CONNECTED", "DTMF 5", "STOPPED other.wav", "STOPPED menu.wav", "DTMF 6")
    assert call.wait_connected()
    call.play("menu.wav", wait=True)
    assert pipes.commands() == ["PLAY menu.wav"]
    assert call.next_event() == DtmfReceived("5")
    assert call.next_event() == Stopped("other.wav")
    assert call.next_event() == DtmfReceived("6")
    assert call.connected and call.playing == ()
    call.play("a.wav")
    call.play("b.wav")
    assert call.playing == ("a.wav", "b.wav")
    pipes.events("STOPPED a.wav", "ERROR PLAY cannot play 'b.wav': no such file")
    assert call.next_event(timeout=0) == Stopped("a.wav") and call.playing == ("b.wav",)
    assert isinstance(call.next_event(timeout=0), ErrorEvent) and call.playing == ()


def test_a_refused_play_raises(pipes: Pipes) -> None:
    call = call_on(pipes)
    pipes.events("ERROR PLAY cannot play 'gone.wav': no such file")
    with pytest.raises(CommandFailed, match=r"PLAY failed: cannot play 'gone\.wav'") as info:
        call.play("gone.wav", wait=True)
    assert info.value.error == ErrorEvent("PLAY", "cannot play 'gone.wav': no such file")


def test_gather_sends_gather_and_returns_the_keys(pipes: Pipes) -> None:
    call = call_on(pipes)
    pipes.events("DTMF 1", "DTMF 2", "DTMF #", "GATHERED 12 finish")
    assert call.gather(max_digits=4, timeout=2.5) == "12"
    assert call.gathered == Gathered("12", "finish")
    assert pipes.commands() == ["GATHER max=4 timeout=2.5 finish=#"]
    assert call.next_event(timeout=0) is None  # its DTMF events went with it
    pipes.events("GATHERED - timeout")
    assert call.gather(finish="", first=8, bargein=True) == ""
    assert call.gathered == Gathered("", "timeout")
    assert pipes.commands() == ["GATHER max=1 first=8 bargein"]
    with pytest.raises(ValueError, match="max must be 1-128"):
        call.gather(max_digits=0)
    with pytest.raises(ValueError, match=r"timeout must be 0\.1-3600 seconds"):
        call.gather(timeout=0.01)
    with pytest.raises(ValueError, match="finish must be one DTMF key"):
        call.gather(finish="12")
    assert pipes.commands() == []


def test_keys_before_the_gather_stay_dtmf_events(pipes: Pipes) -> None:
    # siproc gathers from the GATHER on: 3 was pressed before (it may even reach us after
    # the GATHER was sent, if it was in flight); 4 and 5 are the GATHER's, max=2
    call = call_on(pipes)
    pipes.events("DTMF 3", "CONNECTED", "DTMF 4", "MESSAGE hi", "DTMF 5", "GATHERED 45 max")
    assert call.gather(max_digits=2) == "45"
    assert pipes.commands() == ["GATHER max=2 finish=#"]
    assert call.next_event() == DtmfReceived("3")
    assert call.next_event() == Connected()
    assert call.next_event() == MessageReceived("hi")
    assert call.next_event(timeout=0) is None


def test_a_gather_that_is_cancelled_or_refused(pipes: Pipes) -> None:
    call = call_on(pipes)
    pipes.events("DTMF 7", "GATHERED 7 cancelled")  # the handler sent its own GATHER line
    assert call.gather(max_digits=3) == "7" and call.gathered == Gathered("7", "cancelled")
    pipes.events("ERROR GATHER the call is ending")
    with pytest.raises(CommandFailed, match="GATHER failed: the call is ending"):
        call.gather()


def test_say_names_itself_and_can_wait(pipes: Pipes) -> None:
    call = call_on(pipes)
    call.play("menu.wav")
    assert call.say("Hello\nthere") == "say:1"
    call.send("SAY by hand")  # counted: siproc names it say:2
    call.send("SAY")  # refused by siproc (missing text): not counted
    assert call.playing == ("menu.wav", "say:1", "say:2")
    pipes.events("STOPPED say:2", "STOPPED menu.wav", "STOPPED say:3")
    assert call.say("Goodbye.", wait=True) == "say:3"
    assert pipes.commands() == [
        "PLAY menu.wav",
        "SAY Hello\\nthere",
        "SAY by hand",
        "SAY",
        "SAY Goodbye.",
    ]
    assert call.playing == ("say:1",)
    assert call.next_event() == Stopped("say:2") and call.next_event() == Stopped("menu.wav")
    with pytest.raises(ValueError, match="missing text"):
        call.say(" ")


def test_a_failed_say_raises(pipes: Pipes) -> None:
    call = call_on(pipes)
    call.say("first")
    no_engine = "no text-to-speech engine: espeak-ng is not installed"
    pipes.events(f"ERROR SAY {no_engine}", f"ERROR SAY {no_engine}")
    with pytest.raises(CommandFailed, match="SAY failed: no text-to-speech engine") as info:
        call.say("second", wait=True)  # the second ERROR SAY is its own
    assert info.value.error == ErrorEvent("SAY", no_engine)
    assert call.playing == ()
    assert call.next_event() == ErrorEvent("SAY", no_engine)  # the first SAY's, kept


def test_disconnected_is_the_last_event(pipes: Pipes) -> None:
    call = call_on(pipes)
    pipes.events("CONNECTED", "DTMF 1", "DISCONNECTED 200 remote hangup", "DTMF 2")
    assert list(call.events()) == [
        Connected(),
        DtmfReceived("1"),
        Disconnected(200, "remote hangup"),
    ]
    assert call.disconnected == Disconnected(200, "remote hangup") and call.ended
    with pytest.raises(CallEnded, match="the call ended: 200 remote hangup") as info:
        call.gather()
    assert info.value.status == 200 and not isinstance(info.value, Terminated)


def test_end_of_input_ends_the_call(pipes: Pipes) -> None:
    call = call_on(pipes)
    pipes.events("", "CONNECTED")
    pipes.eof()
    assert call.next_event() == Connected()
    with pytest.raises(CallEnded, match="input closed"):
        call.next_event()
    with pytest.raises(CallEnded):  # and stays over
        call.dtmf("1") or call.next_event()


def test_next_event_times_out(pipes: Pipes) -> None:
    assert call_on(pipes).next_event(timeout=0) is None


def test_sigterm_under_run_is_a_clean_end() -> None:
    handler = textwrap.dedent(
        """
        import sys
        from siproc.handler import Call, run

        def main(call: Call) -> None:
            call.answer()
            try:
                call.gather(timeout=60)
            finally:
                print("cleaned up", file=sys.stderr)
        run(main)
        """
    )
    env = {**os.environ, "SIPROC_CALL_ID": "x@y", "SIPROC_OUTGOING": "n"}
    proc = subprocess.Popen(
        [sys.executable, "-c", handler],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline() == b"ANSWER\n"
    assert proc.stdout.readline().startswith(b"GATHER ")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert err.decode() == "cleaned up\n"


def test_run_outside_siproc_says_so() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPROC_")}
    proc = subprocess.run(
        [sys.executable, "-c", "from siproc.handler import run; run(print)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr == "-c: SIPROC_CALL_ID is not set: this handler was not started by siproc\n"


def test_async_flavour(pipes: Pipes) -> None:
    async def main() -> None:
        call = AsyncCall(INFO, stdin=pipes.stdin_r, stdout=pipes.stdout_w)
        pipes.events("CONNECTED", "DTMF 7", "STOPPED menu.wav", "DTMF 4", "GATHERED 4 max")
        assert await call.wait_connected(timeout=5)
        await call.play("menu.wav", wait=True)
        assert await call.gather(max_digits=1, bargein=True) == "4"
        assert await call.next_event(timeout=0.01) == DtmfReceived("7")  # before the GATHER
        pipes.events("ERROR GATHER the call is ending")
        with pytest.raises(CommandFailed):
            await call.gather(timeout=0.5)
        pipes.events("STOPPED say:1")
        assert await call.say("Hi", wait=True) == "say:1"
        asyncio.get_running_loop().call_soon(call.terminate)
        with pytest.raises(Terminated):
            await call.next_event()
        call.close()
        pipes.events("DISCONNECTED 200")

    asyncio.run(asyncio.wait_for(main(), 10))
    assert pipes.commands() == [
        "PLAY menu.wav",
        "GATHER max=1 finish=# bargein",
        "GATHER max=1 timeout=0.5 finish=#",
        "SAY Hi",
    ]


def test_async_disconnected_and_events(pipes: Pipes) -> None:
    async def main() -> list[object]:
        call = AsyncCall(INFO, stdin=pipes.stdin_r, stdout=pipes.stdout_w)
        pipes.events("CONNECTED", "DISCONNECTED 487 cancelled by the caller")
        seen = [event async for event in call.events()]
        with pytest.raises(CallEnded, match="487"):
            await call.play("x.wav", wait=True)
        call.close()
        return seen

    assert asyncio.run(asyncio.wait_for(main(), 10)) == [
        Connected(),
        Disconnected(487, "cancelled by the caller"),
    ]

"""siproc-sim (siproc/sim/) with real handler processes: siproc's example handlers pass their
scripts (this is how they run in CI), and broken handlers fail with a message that says why."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.audio import make_tone

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCRIPTS = EXAMPLES / "sim"

# (script, handler, arguments): every example handler under every script written for it
EXAMPLE_RUNS = [
    (script, handler, args)
    for script, handlers, args in [
        ("handle.sim", ("handle.sh", "handle.py"), ["message.wav"]),
        ("handle-outgoing.sim", ("handle.sh", "handle.py"), ["message.wav"]),
        ("narrate.sim", ("narrate.sh", "narrate.py"), ["message.wav"]),
        ("ivr.sim", ("ivr.sh", "ivr.py"), []),
        ("ivr-wrong-key.sim", ("ivr.sh", "ivr.py"), []),
        ("ivr-transfer.sim", ("ivr.sh", "ivr.py"), []),
    ]
    for handler in handlers
]


def sim(
    workdir: Path,
    script: str | Path,
    *handler: str,
    env: dict[str, str] | None = None,
    tts: str = "estimate",
) -> subprocess.CompletedProcess[str]:
    """Run siproc-sim; SAY timed from its words unless ``tts="engine"`` (then rendered, with
    the cache in ``workdir``)."""
    if isinstance(script, str):
        path = workdir / "test.sim"
        path.write_text(textwrap.dedent(script))
        script = path
    return subprocess.run(
        [sys.executable, "-m", "siproc.sim", "--tts", tts, "--script", str(script), *handler],
        cwd=workdir,
        env={**os.environ, "SIPROC_TTS_CACHE_DIR": str(workdir / "tts"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def handler(workdir: Path, body: str, name: str = "h.sh") -> str:
    path = workdir / name
    path.write_text(("#!/bin/bash\n" if name.endswith(".sh") else "") + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name in ("message.wav", "menu.wav", "one.wav", "bye.wav"):
        make_tone(tmp_path / name, 440.0, 1.0)
    return tmp_path


@pytest.mark.parametrize(("script", "program", "args"), EXAMPLE_RUNS)
def test_example_handlers_pass_their_scripts(
    workdir: Path, script: str, program: str, args: list[str]
) -> None:
    run = sim(workdir, SCRIPTS / script, str(EXAMPLES / program), *args)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[-1] == f"siproc-sim: passed ({SCRIPTS / script})"
    assert "FAILED" not in run.stdout


def test_every_example_script_is_run() -> None:
    assert {p.name for p in SCRIPTS.glob("*.sim")} == {s for s, _, _ in EXAMPLE_RUNS}


BROKEN = """\
call from sip:alice@example.com
expect ANSWER within 1s
expect PLAY welcome.wav
"""


def test_a_broken_handler_fails_with_a_clear_message(workdir: Path) -> None:
    broken = handler(workdir, 'echo "PLAY missing.wav"\nwhile read -r line; do :; done\n')
    run = sim(workdir, BROKEN, broken)
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert lines[-2] == "siproc-sim: FAILED: handler: PLAY missing.wav: no such file"
    assert lines[-1] == (
        f"siproc-sim: also: {workdir}/test.sim:2: expect ANSWER within 1s: "
        "not sent within 1 s; it sent: PLAY missing.wav"
    )
    # the handler heard what siproc would have told it
    assert any(
        line.endswith("event    ERROR PLAY cannot play 'missing.wav': no such file")
        for line in lines
    )
    assert any(line.endswith("event    DISCONNECTED 487 cancelled by the caller") for line in lines)


def test_transcript_has_times_commands_and_events(workdir: Path) -> None:
    run = sim(workdir, SCRIPTS / "ivr.sim", str(EXAMPLES / "ivr.sh"))
    rows = [line.split(None, 2) for line in run.stdout.splitlines()[:-1]]
    times = [float(row[0]) for row in rows]
    assert times == sorted(times) and times[-1] > 1.0  # one.wav plays for a second
    said = [(row[1], row[2]) for row in rows if row[1] in ("handler", "event")]
    assert said[:3] == [("handler", "RINGING"), ("handler", "ANSWER"), ("event", "CONNECTED")]
    assert ("event", "DTMF 1") in said and ("event", "STOPPED one.wav") in said
    assert said[-1] == ("event", "DISCONNECTED 200 hung up")


def test_unknown_commands_are_noted_not_failed(workdir: Path) -> None:
    h = handler(workdir, "echo FROBNICATE now\necho ANSWER\nwhile read -r l; do :; done\n")
    run = sim(workdir, "call from sip:a@example.com\nexpect ANSWER within 2s\n", h)
    assert run.returncode == 0, run.stdout
    assert "unknown command FROBNICATE: siproc answers ERROR" in run.stdout
    assert "event    ERROR FROBNICATE unknown command" in run.stdout


def test_environment_is_sirocs(workdir: Path) -> None:
    h = handler(workdir, "env | grep '^SIPROC_' | sort > env.txt\n")
    script = """\
        header X-Ticket: 42
        call from "Alice" <sip:alice@example.com> to sip:ivr@example.com
        expect exit 0 within 3s
        """
    run = sim(workdir, script, h, env={"SIPROC_PASSWORD": "secret"})
    assert run.returncode == 0, run.stdout
    env = dict(line.split("=", 1) for line in (workdir / "env.txt").read_text().splitlines())
    assert env["SIPROC_REMOTE_URI"] == "sip:alice@example.com"
    assert env["SIPROC_REMOTE_ID"] == '"Alice" <sip:alice@example.com>'
    assert env["SIPROC_REMOTE_USER"] == "alice" and env["SIPROC_OUTGOING"] == "n"
    assert env["SIPROC_REQUEST_URI"] == env["SIPROC_LOCAL_URI"] == "sip:ivr@example.com"
    assert env["SIPROC_HEADER_X_TICKET"] == "42"
    assert env["SIPROC_CALL_ID"].endswith("@siproc-sim.invalid")
    assert "SIPROC_PASSWORD" not in env


def test_a_handler_that_ignores_sigterm_fails(workdir: Path) -> None:
    h = handler(workdir, "trap '' TERM\necho ANSWER\nwhile :; do read -r l || sleep 0.1; done\n")
    run = sim(workdir, "call from sip:a@example.com\nexpect ANSWER\nhangup\n", h)
    assert run.returncode == 1
    assert run.stdout.splitlines()[-1] == (
        "siproc-sim: FAILED: the handler ignored SIGTERM and was killed after 3 s"
    )


def test_a_failing_exit_status_fails_unless_expected(workdir: Path) -> None:
    h = handler(workdir, "exit 3\n")
    run = sim(workdir, "call from sip:a@example.com\n", h)
    assert run.returncode == 1
    assert run.stdout.splitlines()[-1] == "siproc-sim: FAILED: the handler exited with status 3"
    run = sim(workdir, "call from sip:a@example.com\nexpect exit 3\n", h)
    assert run.returncode == 0, run.stdout
    run = sim(workdir, "call from sip:a@example.com\nexpect exit 0\n", h)
    assert run.returncode == 1
    assert "expect exit 0: it ended with 3" in run.stdout


def test_record_gets_the_far_ends_audio(workdir: Path) -> None:
    h = handler(workdir, "echo ANSWER\necho 'RECORD rec.wav'\nwhile read -r l; do :; done\n")
    script = """\
        call from sip:a@example.com
        expect RECORD rec.wav
        audio silence 200ms
        audio tone 1000 1s
        hangup
        """
    run = sim(workdir, script, h)
    assert run.returncode == 0, run.stdout
    data, rate = soundfile.read(workdir / "rec.wav", dtype="float32")
    assert rate == 8000 and 1.1 < len(data) / rate < 1.6
    spectrum = np.abs(np.fft.rfft(data))
    assert abs(np.argmax(spectrum) * rate / len(data) - 1000) < 10


def events_of(run: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.split(None, 2)[2] for line in run.stdout.splitlines() if "  event  " in line]


GATHERING = """\
echo ANSWER
while read -r line; do
    case "$line" in
        CONNECTED) echo "PLAY menu.wav"; echo "SAY Hello there"
                   echo "GATHER max=3 first=2 timeout=0.5 bargein" ;;
        "DTMF 2") echo "GATHER finish=# first=2" ;;   # replaces the running GATHER
        "GATHERED 34 finish") echo "GATHER max=2 first=0.3" ;;
        "GATHERED - timeout") echo HANGUP ;;
    esac
done
"""


def test_gather_as_siproc_does_it(workdir: Path) -> None:
    script = """\
        call from sip:a@example.com
        expect GATHER max=3 first=2 timeout=0.5 bargein
        dtmf 1 2
        expect GATHER finish=# first=2
        dtmf 3 4 #
        expect HANGUP within 3s
        """
    run = sim(workdir, script, handler(workdir, GATHERING))
    assert run.returncode == 0, run.stdout + run.stderr
    assert events_of(run) == [
        "CONNECTED",
        "DTMF 1",  # bargein: the first key stops every prompt, the newest first
        "STOPPED say:1",
        "STOPPED menu.wav",
        "DTMF 2",
        "GATHERED 12 cancelled",  # the handler's new GATHER
        "DTMF 3",
        "DTMF 4",
        "DTMF #",
        "GATHERED 34 finish",
        "GATHERED - timeout",
        "DISCONNECTED 200 hung up",
    ]
    assert "sim      GATHER bargein: 2 prompt(s) stopped" in run.stdout


def test_say_and_gather_with_the_handler_kit(workdir: Path) -> None:
    kit = handler(
        workdir,
        """\
        #!/usr/bin/env python3
        from siproc.handler import Call, run

        def main(call: Call) -> None:
            call.answer()
            call.wait_connected()
            call.play("menu.wav")
            first = call.gather(max_digits=3, timeout=2, bargein=True)
            second = call.gather(max_digits=3, timeout=0.3)
            name = call.say(f"got {first} then {second or 'nothing'}", wait=True)
            call.message(f"{name} said, {call.gathered}, playing {call.playing}")
            call.hangup()

        run(main)
        """,
        "kit.py",
    )
    script = """\
        call from sip:a@example.com
        expect GATHER max=3 timeout=2 finish=# bargein
        dtmf 4 2 #
        expect GATHER max=3 timeout=0.3 finish=#
        expect SAY got 42 then nothing
        # four words at 175 a minute: 1.37 s
        expect no MESSAGE within 1s
        expect MESSAGE say:1 said, Gathered(keys='', why='timeout'), playing ()
        expect HANGUP
        """
    run = sim(workdir, script, sys.executable, kit)
    assert run.returncode == 0, run.stdout + run.stderr
    events = events_of(run)
    assert events.index("STOPPED menu.wav") == events.index("DTMF 4") + 1
    assert events.index("GATHERED 42 finish") == events.index("DTMF #") + 1
    assert "sim      say:1 lasts 1.37 s (estimated, no engine run)" in run.stdout


FAKE_ENGINE = """\
import sys
import numpy as np
import soundfile
soundfile.write(sys.argv[1], np.zeros(int(0.6 * 22050), np.int16), 22050)
"""

SAYING = """\
echo ANSWER
echo "SAY one"
while read -r line; do
    case "$line" in
        "STOPPED say:1") echo "SAY one" ;;
        "STOPPED say:2") echo HANGUP ;;
        "ERROR SAY "*) echo HANGUP ;;
    esac
done
"""


def test_say_rendered_by_the_engine_as_siproc_would(workdir: Path) -> None:
    (workdir / "engine.py").write_text(FAKE_ENGINE)
    command = f"{sys.executable} {workdir / 'engine.py'} {{file}}"
    script = "call from sip:a@example.com\nexpect HANGUP within 5s\n"
    h = handler(workdir, SAYING)
    run = sim(workdir, script, h, env={"SIPROC_TTS_COMMAND": command}, tts="engine")
    assert run.returncode == 0, run.stdout + run.stderr
    assert events_of(run) == [
        "CONNECTED",
        "STOPPED say:1",
        "STOPPED say:2",
        "DISCONNECTED 200 hung up",
    ]
    rows = [line.split(None, 2) for line in run.stdout.splitlines()[:-1]]
    said = {text: float(at) for at, who, text in rows if who in ("handler", "event")}
    assert said["STOPPED say:2"] - said["STOPPED say:1"] >= 0.6  # the speech's own length
    notes = [text for _, who, text in rows if who == "sim" and text.startswith("say:")]
    assert notes == [
        f"say:1 lasts 0.60 s (rendered by {Path(sys.executable).name})",
        "say:2 lasts 0.60 s (from the cache)",
    ]


def test_stop_while_the_engine_renders_stops_that_say(workdir: Path) -> None:
    (workdir / "engine.py").write_text("import time\ntime.sleep(0.5)\n" + FAKE_ENGINE)
    command = f"{sys.executable} {workdir / 'engine.py'} {{file}}"
    h = handler(workdir, 'echo ANSWER\necho "SAY slow"\necho STOP\nwhile read -r l; do :; done\n')
    script = "call from sip:a@example.com\nexpect STOP\nwait 1s\nhangup\n"
    run = sim(workdir, script, h, env={"SIPROC_TTS_COMMAND": command}, tts="engine")
    assert run.returncode == 0, run.stdout + run.stderr
    # stopped at once; rendered for the cache, never played
    assert events_of(run) == ["CONNECTED", "STOPPED say:1", "DISCONNECTED 200 remote hangup"]
    assert "say:1 lasts" not in run.stdout
    assert len(list((workdir / "tts").glob("*.wav"))) == 1


def test_say_errors_are_siprocs(workdir: Path) -> None:
    script = "call from sip:a@example.com\nexpect HANGUP within 5s\n"
    h = handler(workdir, SAYING)
    none = sim(workdir, script, h, env={"PATH": str(workdir / "empty")}, tts="engine")
    assert none.returncode == 0, none.stdout + none.stderr
    assert events_of(none)[1] == (
        "ERROR SAY no text-to-speech engine: espeak-ng is not installed "
        "(install it, or set SIPROC_TTS_COMMAND)"
    )
    failing = sim(workdir, script, h, env={"SIPROC_TTS_COMMAND": "false {file}"}, tts="engine")
    assert failing.returncode == 0, failing.stdout + failing.stderr
    assert events_of(failing)[1] == "ERROR SAY false failed (exit status 1)"
    bad = sim(workdir, script, h, env={"SIPROC_TTS_COMMAND": "espeak-ng"}, tts="engine")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("siproc-sim: SIPROC_TTS_COMMAND: must name the WAV file")


def test_expect_no_fails_when_the_command_comes(workdir: Path) -> None:
    h = handler(workdir, "echo ANSWER\nsleep 0.4\necho HANGUP\nwhile read -r l; do :; done\n")
    script = "call from sip:a@example.com\nexpect ANSWER\nexpect no HANGUP within 2s\n"
    run = sim(workdir, script, h)
    assert run.returncode == 1
    last = run.stdout.splitlines()[-1]
    head = f"siproc-sim: FAILED: {workdir}/test.sim:3: expect no HANGUP within 2s: "
    head += "it sent HANGUP at "
    assert last.startswith(head) and float(last.removeprefix(head)) >= 0.4
    passing = sim(workdir, script.replace("2s", "200ms"), h)
    assert passing.returncode == 0, passing.stdout


def test_outgoing_call_refused_by_the_far_end(workdir: Path) -> None:
    h = handler(workdir, 'while read -r l; do echo "$l" >> events.txt; done\n')
    run = sim(workdir, "call to sip:bob@example.com\nringing\nreject 486 Busy Here\n", h)
    assert run.returncode == 0, run.stdout
    assert (workdir / "events.txt").read_text() == "RINGING\nDISCONNECTED 486 Busy Here\n"


def test_script_mistakes_exit_2_before_anything_runs(workdir: Path) -> None:
    h = handler(workdir, "touch ran\n")
    run = sim(workdir, "call from sip:a@example.com\nexpect ANSWER within 2 s\n", h)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == (
        f"siproc-sim: {workdir}/test.sim:2: `within T` must end the line, T in one word such "
        "as 2s\n"
    )
    assert not (workdir / "ran").exists()
    missing = sim(workdir, workdir / "nope.sim", h)
    assert missing.returncode == 2
    assert missing.stderr == (
        f"siproc-sim: cannot read the script {workdir}/nope.sim: No such file or directory\n"
    )


def test_a_handler_that_cannot_run_is_a_usage_error(workdir: Path) -> None:
    (workdir / "plain.sh").write_text("echo ANSWER\n")  # not executable
    run = sim(workdir, "call from sip:a@example.com\n", str(workdir / "plain.sh"))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == (
        f"siproc-sim: handler '{workdir}/plain.sh' is not an executable file "
        "(check the path and chmod +x)\n"
    )

"""``siproc-sim [--script FILE] HANDLER [ARGS]``: run a handler as siproc would, against a
scripted far end and no network (siproc-sim(1)); print the transcript; exit 1 when an
expectation fails, 2 for a script or usage error."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import TextIO

from siproc import __version__
from siproc.calls.handler import find_handler
from siproc.config import ConfigError, tts_settings
from siproc.logs import SafeFormatter
from siproc.net.tts import TextToSpeech
from siproc.sim.script import Script, ScriptError, parse_script

__all__ = ["main", "run_script"]

DESCRIPTION = """\
Run HANDLER [ARGS...] as siproc runs a call's handler (same environment, stdin/stdout protocol,
process group, DISCONNECTED then SIGTERM), against the far end the script describes, with no
network. Prints the transcript of commands and events with their times; exits 1 when an
expectation fails, 2 when the script has a mistake. See siproc-sim(1)."""

TTS_HELP = """how SAY is timed: 'engine' (the default) renders it as siproc would, with
SIPROC_TTS_COMMAND or espeak-ng, and answers ERROR SAY as siproc does without one; 'estimate'
runs no engine and gives each SAY 175 words a minute"""


def run_script(
    script: Script, argv: list[str], out: TextIO | None = None, tts: TextToSpeech | None = None
) -> int:
    """Run ``argv`` under ``script``, transcript to ``out`` (default stdout); exit status.
    ``tts`` renders SAY; None times SAY from its words (``--tts estimate``)."""
    from siproc.sim.runner import Simulation

    stream = sys.stdout if out is None else out

    async def body() -> int:
        sim = Simulation(script, argv, stream, tts=tts)
        code = await sim.run()
        if sim.failures:
            print(f"siproc-sim: FAILED: {sim.failures[0]}", file=stream)
            for more in sim.failures[1:]:
                print(f"siproc-sim: also: {more}", file=stream)
        else:
            print(f"siproc-sim: passed ({script.name})", file=stream)
        return code

    return asyncio.run(body())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="siproc-sim", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"siproc-sim {__version__}")
    parser.add_argument(
        "--script", metavar="FILE", help="the script (default: read it from standard input)"
    )
    parser.add_argument(
        "--tts", choices=("engine", "estimate"), default="engine", help=TTS_HELP.replace("\n", " ")
    )
    parser.add_argument("handler", metavar="HANDLER", help="the handler program")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="its arguments")
    ns = parser.parse_args(argv)
    try:
        if ns.script is None or ns.script == "-":
            name, text = "<stdin>", sys.stdin.read()
        else:
            name = ns.script
            with open(ns.script, encoding="utf-8") as file:
                text = file.read()
        script = parse_script(text, name)
    except OSError as exc:
        reason = exc.strerror or exc
        print(f"siproc-sim: cannot read the script {ns.script}: {reason}", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print(f"siproc-sim: {ns.script}: the script is not UTF-8 text", file=sys.stderr)
        return 2
    except ScriptError as exc:
        print(f"siproc-sim: {exc}", file=sys.stderr)
        return 2
    tts: TextToSpeech | None = None
    if ns.tts == "engine":
        try:
            tts = TextToSpeech(tts_settings(os.environ))
        except ConfigError as exc:
            print(f"siproc-sim: {exc}", file=sys.stderr)
            return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter("siproc-sim %(levelname)s: %(message)s"))
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.WARNING)
    program = find_handler(ns.handler)  # as siproc finds it: a path, or a name in PATH
    if program is None:
        print(
            f"siproc-sim: handler {ns.handler!r} is not an executable file "
            "(check the path and chmod +x)",
            file=sys.stderr,
        )
        return 2
    return run_script(script, [program, *ns.args], tts=tts)

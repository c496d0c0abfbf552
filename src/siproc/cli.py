"""Command line entry points: `siproc` and `siproc-parameters` (see siproc(1))."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import sys

from siproc import __version__
from siproc.calls.handler import find_handler
from siproc.config import Config, ConfigError, load_config
from siproc.logs import setup_logging
from siproc.net.fd_limit import raise_fd_limit
from siproc.net.tls import TlsFileError, check_files

ALSA_NOT_INSTALLED = "ALSA support not installed (pip install siproc[alsa])"
# Allocations between two young collections (Python's default: 700). Every call allocates a few
# thousand objects that live about as long as the call; with the default the collector ran
# every few hundred microseconds at 400 new calls per second (as the media worker's does).
GC_THRESHOLD = 10_000

DESCRIPTION = """\
A scriptable SIP softphone: for every incoming or outgoing call it runs HANDLER [ARGS...],
which drives the call with commands on its stdout and reads events on its stdin.
Standard input takes 'CALL <sip-uri>' and 'QUIT'. The account and settings come from
SIPROC_* environment variables; see siproc(1)."""


def _load_config() -> Config:
    """The Config of the environment, with its TLS files loaded once (config.py reads no file):
    any problem is a ConfigError naming the variable."""
    config = load_config(os.environ)
    try:
        check_files(config.tls)
    except TlsFileError as exc:
        raise ConfigError(exc.variable, exc.problem) from None
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="siproc", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"siproc {__version__}")
    parser.add_argument("handler", metavar="HANDLER", help="program to run for every call")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="its arguments")
    ns = parser.parse_args(argv)
    try:
        config = _load_config()
    except ConfigError as exc:
        print(f"siproc: {exc}", file=sys.stderr)
        return 1
    handler = find_handler(ns.handler)
    if handler is None:
        print(
            f"siproc: handler {ns.handler!r} is not an executable file "
            "(check the path and chmod +x)",
            file=sys.stderr,
        )
        return 1
    setup_logging(config.log_level, log_format=config.log_format)
    raise_fd_limit()
    try:
        return _run(config, [handler, *ns.args])
    except (OSError, ConfigError) as exc:  # ConfigError: SIPROC_CDR cannot be opened
        print(f"siproc: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _run(config: Config, argv: list[str]) -> int:
    from siproc.calls.phone import Phone

    # What is imported lives as long as siproc: out of the collector's way (gc.freeze), so
    # that a full collection walks the calls, not every module, function and class (about
    # 10 % of the main process's CPU at 250 new calls per second went to collections).
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])

    async def run() -> int:
        phone = Phone(config, argv)
        return await phone.run()

    if importlib.util.find_spec("uvloop") is None:  # optional: `pip install siproc[fast]`
        return asyncio.run(run())
    import uvloop

    result: int = uvloop.run(run())
    return result


def parameters_main(argv: list[str] | None = None) -> int:
    """`siproc-parameters`: the codecs with their priorities, and what this build can do."""
    parser = argparse.ArgumentParser(
        prog="siproc-parameters",
        description="Print the codecs siproc knows, their priorities (after "
        "SIPROC_CODEC_PRIORITIES) and whether they are usable here.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--version", action="version", version=f"siproc {__version__}")
    ns = parser.parse_args(argv)
    try:
        config = _load_config()
    except ConfigError as exc:
        print(f"siproc-parameters: {exc}", file=sys.stderr)
        return 1
    codecs = [
        {"name": c.full_name, "priority": c.priority, "usable": c.usable, "note": c.reason}
        for c in config.codecs
    ]
    from siproc.net.alsa import sound_devices

    devices = sound_devices()  # None: pyalsaaudio is not installed
    media = {"workers": config.media_workers, "priority": config.media_priority}
    if ns.json:
        report: dict[str, object] = {
            "version": __version__,
            "codecs": codecs,
            "media": media,  # SIPROC_MEDIA_WORKERS, SIPROC_MEDIA_PRIORITY (the most asked for)
            "sound_devices": devices,  # {"playback": [...], "capture": [...]} or null
        }
        if devices is None:
            report["sound_devices_note"] = ALSA_NOT_INSTALLED
        print(json.dumps(report, indent=2))
        return 0
    print(f"siproc {__version__}\n\nCodecs (name, priority, usable):")
    for c in codecs:
        usable = "yes" if c["usable"] else f"no ({c['note']})"
        print(f"  {c['name']:<24} {c['priority']:>3}  {usable}")
    workers = config.media_workers
    print(
        f"\nMedia: {workers} worker process{'es' if workers != 1 else ''}"
        f"{' (media in the main process)' if not workers else ''}, "
        f"priority up to {config.media_priority}"
    )
    if devices is None:
        print(f"\nSound devices: {ALSA_NOT_INSTALLED}")
        return 0
    for direction, verb, lister in (
        ("playback", "ARECORD", "aplay -L"),
        ("capture", "APLAY", "arecord -L"),
    ):
        print(f"\nSound devices, {direction} PCMs for {verb} (as {lister} names them):")
        for name in devices[direction] or ["(none)"]:
            print(f"  {name}")
    return 0

"""Command line entry points: `siproc` and `siproc-parameters` (see siproc(1))."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import resource
import shutil
import sys

from siproc import __version__
from siproc.config import LOG_LEVELS, Config, ConfigError, load_config
from siproc.logs import LOG_FORMATS, JsonFormatter, SafeFormatter

log = logging.getLogger("siproc")

ALSA_NOT_INSTALLED = "ALSA support not installed (pip install siproc[alsa])"

DESCRIPTION = """\
A scriptable SIP softphone: for every incoming or outgoing call it runs HANDLER [ARGS...],
which drives the call with commands on its stdout and reads events on its stdin.
Standard input takes 'CALL <sip-uri>' and 'QUIT'. The account and settings come from
SIPROC_* environment variables; see siproc(1)."""


def setup_logging(level: int, program: str = "siproc", log_format: str = "text") -> None:
    """Log lines to stderr: ``siproc[PID] LEVEL: message`` (``program``: a media worker's
    lines say ``siproc-media``), or one JSON object per line (``log_format`` json,
    SIPROC_LOG_FORMAT; siproc/logs.py)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    detail = " %(name)s" if level >= 4 else ""
    formatter: logging.Formatter = (
        JsonFormatter(program)
        if log_format == "json"
        else SafeFormatter(f"{program}[%(process)d] %(levelname)s{detail}: %(message)s")
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LOG_LEVELS[level])
    if level < 5:  # state machine chatter only from level 5 up
        for name in ("siproc.sip.transaction", "siproc.sip.dialog", "siproc.sip.registration"):
            logging.getLogger(name).setLevel(max(LOG_LEVELS[level], logging.INFO))


def raise_fd_limit() -> None:
    """Raise the soft limit of open files to the hard one: every call holds an RTP and an
    RTCP socket (and a recording), and the common soft limit of 1024 would stop a siproc at a
    few hundred calls with "Too many open files"."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:  # a container may forbid it: keep what we have
        log.debug("cannot raise the limit of open files: %s", exc)


def _find_handler(path: str) -> str | None:
    """The handler as it will be run, or None; a bare name is looked up in PATH like execvp."""
    if os.sep in path:
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    return shutil.which(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="siproc", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"siproc {__version__}")
    parser.add_argument("handler", metavar="HANDLER", help="program to run for every call")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="its arguments")
    ns = parser.parse_args(argv)
    try:
        config = load_config(os.environ)
    except ConfigError as exc:
        print(f"siproc: {exc}", file=sys.stderr)
        return 1
    handler = _find_handler(ns.handler)
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
    except OSError as exc:
        print(f"siproc: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


def _run(config: Config, argv: list[str]) -> int:
    from siproc.calls.phone import Phone

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
        config = load_config(os.environ)
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

"""Text to speech for SAY: run an engine off the event loop, cache what it renders on disk.

Theory of operation
-------------------
The engine is a command (SIPROC_TTS_COMMAND, config.TtsSettings), by default
``espeak-ng -w {file} -- {text}`` when espeak-ng is on PATH. The command is a list of words; in
each word ``{text}`` is replaced by the text and ``{file}`` by the WAV file to write, in one pass
(so text that contains ``{file}`` stays as it is). The text is one argv element, never seen by
a shell; a command without ``{text}`` gets the text on its stdin instead (piper reads it there).
Text from a handler is untrusted: the default command puts ``--`` before it, so a text that
starts with ``-`` is not an option.

A render runs as an asyncio subprocess in its own session, with a bounded time
(SIPROC_TTS_TIMEOUT; then its process group is killed), a bounded output (the file it writes is
watched; more than :data:`MAX_ENGINE_BYTES` kills it), the tail of its stderr kept for the error
and its stdout discarded; at most :data:`MAX_RENDERS` run at once. Its WAV is then converted
(in a thread: soundfile, soxr) to what the call's codec needs: mono 16-bit PCM at the codec's
rate, so that playing it costs no resampling.

The cache (SIPROC_TTS_CACHE_DIR) holds one ``<key>.wav`` per rendering, the key being the
SHA-256 of the engine command, the rate and the text: a change of engine or voice (which is part
of the command) renders anew. Files appear whole (written aside, then renamed), so several
siproc processes may share the directory. A cache hit touches the file; after each render the
oldest files (by modification time) go until the directory is within SIPROC_TTS_CACHE_SIZE.
Two SAYs of the same text at once share one render.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import soundfile
import soxr

from siproc.config import SECRET_VARIABLES, TtsSettings

__all__ = [
    "DEFAULT_COMMAND",
    "MAX_ENGINE_BYTES",
    "MAX_SPEECH_SECONDS",
    "TextToSpeech",
    "TtsError",
    "cache_key",
    "engine_argv",
]

log = logging.getLogger(__name__)

#: The engine when SIPROC_TTS_COMMAND is not set (Debian's espeak-ng; ``--``: text is no option).
DEFAULT_COMMAND: Final = ("espeak-ng", "-w", "{file}", "--", "{text}")
#: The most an engine may write (bytes): about 25 minutes of 22 kHz 16-bit speech.
MAX_ENGINE_BYTES: Final = 64_000_000
#: The longest speech one SAY may give (seconds).
MAX_SPEECH_SECONDS: Final = 600.0
#: Engines running at once, for all calls (more SAYs wait their turn).
MAX_RENDERS: Final = max(1, min(4, os.cpu_count() or 1))
_POLL: Final = 0.05  # seconds between two looks at the engine's output file
_STDERR_TAIL: Final = 300  # characters of the engine's stderr kept for ERROR SAY
_PLACEHOLDER = re.compile(r"\{(text|file)\}")


class TtsError(Exception):
    """SAY cannot be rendered; ``str()`` is the one-line reason for ``ERROR SAY``."""


def engine_argv(command: Sequence[str], text: str, file: str) -> tuple[list[str], str | None]:
    """The argv that renders ``text`` to ``file``, and the text for stdin (None when the
    command takes it as ``{text}``). Placeholders are replaced in one pass per word."""
    has_text = any("{text}" in word for word in command)
    values = {"text": text, "file": file}
    argv = [_PLACEHOLDER.sub(lambda m: values[m.group(1)], word) for word in command]
    return argv, None if has_text else text


def cache_key(command: Sequence[str], rate: int, text: str) -> str:
    """The cache file's name (without ``.wav``) for ``text`` by ``command`` at ``rate`` Hz."""
    digest = hashlib.sha256()
    for part in (*command, f"rate={rate}", text):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(4, "big"))  # length-prefixed: no two inputs collide
        digest.update(data)
    return digest.hexdigest()


class TextToSpeech:
    """The engine and cache of one siproc process; see the module docstring."""

    def __init__(
        self,
        settings: TtsSettings,
        *,
        env: Mapping[str, str] | None = None,
        which: Callable[[str], str | None] = shutil.which,
    ) -> None:
        self.settings = settings
        base = dict(os.environ if env is None else env)
        self._env = {k: v for k, v in base.items() if k not in SECRET_VARIABLES}
        self._which = which
        self._renders: dict[str, asyncio.Future[Path]] = {}
        self._slots: asyncio.Semaphore | None = None
        self.engine_runs = 0  # renders started (the tests and the log count them)

    def command(self) -> tuple[str, ...]:
        """The engine's command; raises :class:`TtsError` when there is none."""
        if self.settings.command is not None:
            return self.settings.command
        if self._which(DEFAULT_COMMAND[0]) is None:
            raise TtsError(
                f"no text-to-speech engine: {DEFAULT_COMMAND[0]} is not installed "
                "(install it, or set SIPROC_TTS_COMMAND)"
            )
        return DEFAULT_COMMAND

    def cache_path(self, command: Sequence[str], rate: int, text: str) -> Path:
        return Path(self.settings.cache_dir) / f"{cache_key(command, rate, text)}.wav"

    async def render(self, text: str, rate: int) -> tuple[Path, bool]:
        """The WAV of ``text`` at ``rate`` Hz (mono, 16-bit) and whether it came from the
        cache; raises :class:`TtsError`."""
        command = self.command()
        path = self.cache_path(command, rate, text)
        key = path.name
        pending = self._renders.get(key)
        if pending is not None:
            return await asyncio.shield(pending), True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Path] = loop.create_future()
        self._renders[key] = future
        try:
            cached = await loop.run_in_executor(None, _touch, path)
            if not cached:
                await self._render(command, text, rate, path)
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, TtsError) else TtsError("cancelled"))
            future.exception()  # retrieved: no "never retrieved" warning without a waiter
            raise
        else:
            future.set_result(path)
        finally:
            del self._renders[key]
        return path, cached

    async def _render(self, command: Sequence[str], text: str, rate: int, path: Path) -> None:
        loop = asyncio.get_running_loop()
        directory = path.parent
        try:
            await loop.run_in_executor(None, lambda: directory.mkdir(parents=True, exist_ok=True))
        except OSError as exc:
            raise TtsError(f"cannot create the cache directory {str(directory)!r}: {exc}") from None
        if self._slots is None:
            self._slots = asyncio.Semaphore(MAX_RENDERS)
        try:
            raw = await loop.run_in_executor(None, _engine_file, directory)
        except OSError as exc:
            raise TtsError(
                f"cannot write to the cache directory {str(directory)!r}: {exc.strerror or exc}"
            ) from None
        try:
            async with self._slots:
                self.engine_runs += 1
                await self._run_engine(command, text, raw)
            size = await loop.run_in_executor(None, _convert, raw, path, rate)
        finally:
            with contextlib.suppress(OSError):
                raw.unlink()
        log.info("SAY rendered by %s: %d bytes at %d Hz", command[0], size, rate)
        await loop.run_in_executor(None, prune, directory, self.settings.cache_size)

    async def _run_engine(self, command: Sequence[str], text: str, raw: Path) -> None:
        argv, stdin_text = engine_argv(command, text, str(raw))
        if any("\x00" in word for word in argv):  # exec would raise ValueError
            raise TtsError("the text contains a NUL character")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL if stdin_text is None else asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                start_new_session=True,  # its own process group: a timeout kills it all
            )
        except OSError as exc:
            raise TtsError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        tail = bytearray()
        tasks = [asyncio.ensure_future(_keep_tail(proc.stderr, tail))]
        if stdin_text is not None:
            tasks.append(asyncio.ensure_future(_feed(proc.stdin, stdin_text)))
        try:
            problem = await self._watch(proc, raw)
        finally:
            if proc.returncode is None:
                _kill_group(proc.pid)
                await proc.wait()
            await asyncio.wait(tasks, timeout=1.0)
            for task in tasks:
                task.cancel()
        if problem is None and proc.returncode != 0:
            problem = f"{os.path.basename(argv[0])} failed (exit status {proc.returncode})"
        if problem is not None:
            detail = tail.decode("utf-8", "replace").strip().splitlines()
            raise TtsError(f"{problem}: {detail[-1]}" if detail else problem)

    async def _watch(self, proc: asyncio.subprocess.Process, raw: Path) -> str | None:
        """Wait for the engine within the time and size limits; the problem, or None."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.timeout
        exited = asyncio.ensure_future(proc.wait())
        try:
            while True:
                done, _ = await asyncio.wait((exited,), timeout=_POLL)
                if done:
                    return None
                try:
                    size = raw.stat().st_size  # one stat per 50 ms: cheap enough for the loop
                except OSError:
                    size = 0
                if size > MAX_ENGINE_BYTES:
                    return f"the engine wrote more than {MAX_ENGINE_BYTES // 1_000_000} MB"
                if loop.time() >= deadline:
                    return f"the engine took more than {self.settings.timeout:g} s"
        finally:
            exited.cancel()


async def _keep_tail(stream: asyncio.StreamReader | None, tail: bytearray) -> None:
    if stream is None:
        return
    while chunk := await stream.read(4096):
        tail.extend(chunk)
        del tail[:-_STDERR_TAIL]


async def _feed(stream: asyncio.StreamWriter | None, text: str) -> None:
    if stream is None:
        return
    with contextlib.suppress(OSError):  # an engine that exits early closes its stdin
        stream.write(text.encode("utf-8", "replace"))
        await stream.drain()
        stream.close()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def _engine_file(directory: Path) -> Path:
    """A new empty file in ``directory`` for the engine to write (aside: a dot name, which
    :func:`prune` and other siprocs sharing the cache leave alone). Runs in a thread."""
    handle, name = tempfile.mkstemp(dir=directory, prefix=".engine-", suffix=".wav")
    os.close(handle)
    return Path(name)


def _touch(path: Path) -> bool:
    """Mark a cached file as used now; False if it is not there."""
    try:
        os.utime(path)
    except OSError:
        return False
    return True


def _convert(raw: Path, path: Path, rate: int) -> int:
    """Read what the engine wrote, write it to ``path`` as mono 16-bit PCM at ``rate`` (aside,
    then renamed); its size in bytes. Runs in a thread."""
    try:
        data, file_rate = soundfile.read(str(raw), dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TtsError(f"the engine wrote no readable audio ({first})") from None
    if data.shape[0] == 0:
        raise TtsError("the engine wrote no audio")
    if data.shape[0] / file_rate > MAX_SPEECH_SECONDS:
        raise TtsError(f"the speech is longer than {MAX_SPEECH_SECONDS:g} s")
    mono = data.mean(axis=1, dtype=np.float32)
    if file_rate != rate:
        mono = soxr.resample(mono, file_rate, rate, quality="HQ")
    samples = np.clip(np.rint(mono * 32768.0), -32768, 32767).astype(np.int16)
    handle, aside = tempfile.mkstemp(dir=path.parent, prefix=".say-", suffix=".wav")
    os.close(handle)
    try:
        soundfile.write(aside, samples, rate, subtype="PCM_16", format="WAV")
        os.replace(aside, path)
    except (RuntimeError, OSError) as exc:
        with contextlib.suppress(OSError):
            os.unlink(aside)
        raise TtsError(f"cannot write to the cache: {exc}") from None
    return path.stat().st_size


def prune(directory: Path, max_bytes: int) -> int:
    """Remove the least recently used ``*.wav`` files of ``directory`` until the rest fit in
    ``max_bytes``; the number removed. Runs in a thread."""
    entries = []
    for entry in os.scandir(directory):
        if not entry.name.endswith(".wav") or entry.name.startswith("."):
            continue
        with contextlib.suppress(OSError):
            stat = entry.stat()
            entries.append((stat.st_mtime, stat.st_size, entry.path))
    total = sum(size for _, size, _ in entries)
    removed = 0
    for _, size, name in sorted(entries):
        if total <= max_bytes:
            break
        with contextlib.suppress(OSError):
            os.unlink(name)
            removed += 1
            total -= size
    if removed:
        log.info("SAY cache: %d old file(s) removed (limit %d MB)", removed, max_bytes // 1_000_000)
    return removed

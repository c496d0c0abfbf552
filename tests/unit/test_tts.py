"""Text to speech for SAY (net/tts.py): argv building, cache keys, and renders by a small
fake engine (a Python script that writes a WAV of as many 10 ms beeps as the text has words)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
import soundfile

from siproc.config import ConfigError, TtsSettings, load_config
from siproc.net.tts import (
    DEFAULT_COMMAND,
    TextToSpeech,
    TtsError,
    cache_key,
    engine_argv,
    prune,
)

# ENGINE MODE OUT [TEXT]: writes OUT (22050 Hz mono 16-bit, 0.1 s per word of TEXT, or of
# stdin without TEXT) and appends its argv and text to runs.jsonl beside itself.
ENGINE = r"""
import json, math, os, struct, sys, time, wave
mode, out = sys.argv[1], sys.argv[2]
text = sys.argv[3] if len(sys.argv) > 3 else sys.stdin.read()
with open(os.path.join(os.path.dirname(sys.argv[0]), "runs.jsonl"), "a") as log:
    log.write(json.dumps({"argv": sys.argv[1:], "text": text}) + "\n")
if mode == "fail":
    sys.stderr.write("warming up\nvoice 'xx' not found\n")
    sys.exit(3)
if mode == "hang":
    time.sleep(30)
if mode == "nothing":
    sys.exit(0)
if mode == "flood":
    with open(out, "wb") as f:
        while True:
            f.write(b"\0" * 1_000_000)
rate = 22050
frames = b"".join(
    struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
    for i in range(int(rate * 0.1 * max(1, len(text.split()))))
)
with wave.open(out, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate); w.writeframes(frames)
"""


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    path = tmp_path / "engine.py"
    path.write_text(ENGINE)
    return path


def runs(engine: Path) -> list[dict[str, object]]:
    log = engine.parent / "runs.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def tts(engine: Path, mode: str = "ok", *, with_text: bool = True, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    command = (sys.executable, str(engine), mode, "{file}", *(["{text}"] if with_text else []))
    settings = TtsSettings(command=command, cache_dir=str(engine.parent / "cache"), timeout=timeout)
    return TextToSpeech(settings, env={"SIPROC_PASSWORD": "secret", "PATH": os.environ["PATH"]})


# --------------------------------------------------------------------------------------------
# argv: the text is one argument, whatever it holds


@pytest.mark.parametrize(
    "text",
    ["-rf /", "$(reboot)", "; rm -rf ~", "a {file} b", "{text}", "`id`", "line\nbreak", "\"'"],
)
def test_text_is_one_argument_never_parsed(text: str) -> None:
    argv, stdin = engine_argv(DEFAULT_COMMAND, text, "/c/x.wav")
    assert argv == ["espeak-ng", "-w", "/c/x.wav", "--", text]  # after --: never an option
    assert stdin is None


def test_placeholders_inside_words_are_replaced_once() -> None:
    argv, stdin = engine_argv(("tts", "--out={file}", "--say={text}!"), "{file}", "/o.wav")
    assert argv == ["tts", "--out=/o.wav", "--say={file}!"]  # the text's {file} stays
    assert stdin is None


def test_a_command_without_text_gets_it_on_stdin() -> None:
    argv, stdin = engine_argv(("piper", "--model", "m.onnx", "--output_file", "{file}"), "hi", "/o")
    assert argv == ["piper", "--model", "m.onnx", "--output_file", "/o"]
    assert stdin == "hi"


# --------------------------------------------------------------------------------------------
# cache keys


def test_cache_key_depends_on_engine_voice_rate_and_text() -> None:
    base = cache_key(DEFAULT_COMMAND, 8000, "hello")
    assert base == cache_key(DEFAULT_COMMAND, 8000, "hello")  # stable
    assert len(base) == 64 and all(c in "0123456789abcdef" for c in base)
    others = {
        cache_key(DEFAULT_COMMAND, 16000, "hello"),
        cache_key(DEFAULT_COMMAND, 8000, "hello!"),
        cache_key(("espeak-ng", "-v", "de", "-w", "{file}", "--", "{text}"), 8000, "hello"),
        cache_key(("piper", "--output_file", "{file}"), 8000, "hello"),
    }
    assert base not in others and len(others) == 4


def test_cache_key_parts_cannot_run_into_each_other() -> None:
    assert cache_key(("ab", "c"), 8000, "x") != cache_key(("a", "bc"), 8000, "x")
    assert cache_key(("a",), 8000, "rate=8000") != cache_key(("a", "rate=8000"), 8000, "")


# --------------------------------------------------------------------------------------------
# the engine


def test_without_espeak_ng_there_is_no_engine() -> None:
    speech = TextToSpeech(TtsSettings(), which=lambda name: None)
    with pytest.raises(TtsError, match=r"^no text-to-speech engine: espeak-ng is not installed"):
        speech.command()
    found = TextToSpeech(TtsSettings(), which=lambda name: f"/usr/bin/{name}")
    assert found.command() == DEFAULT_COMMAND
    configured = TextToSpeech(TtsSettings(command=("x", "{file}")), which=lambda name: None)
    assert configured.command() == ("x", "{file}")


def test_render_converts_to_the_rate_and_caches(engine: Path) -> None:
    speech = tts(engine)

    async def main() -> list[tuple[Path, bool]]:
        first = await speech.render("one two three", 8000)
        second = await speech.render("one two three", 8000)
        wide = await speech.render("one two three", 16000)
        return [first, second, wide]

    (path, cached), (again, cached_again), (wide, cached_wide) = asyncio.run(main())
    assert (cached, cached_again, cached_wide) == (False, True, False)
    assert again == path and wide != path
    assert speech.engine_runs == 2
    assert len(runs(engine)) == 2
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    assert info.frames == pytest.approx(0.3 * 8000, abs=20)  # three words: 0.3 s
    assert soundfile.info(str(wide)).samplerate == 16000
    assert path.parent == engine.parent / "cache"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no leftovers


def test_same_text_at_once_is_rendered_once(engine: Path) -> None:
    speech = tts(engine)

    async def main() -> list[tuple[Path, bool]]:
        return list(await asyncio.gather(*(speech.render("hello", 8000) for _ in range(3))))

    results = asyncio.run(main())
    assert len({path for path, _ in results}) == 1
    assert sorted(cached for _, cached in results) == [False, True, True]
    assert speech.engine_runs == 1


def test_text_reaches_the_engine_intact_and_secrets_do_not(engine: Path, tmp_path: Path) -> None:
    (tmp_path / "env.py").write_text("")
    text = "-v xx $(id) ; `ls` {file} \\ ' \""
    speech = tts(engine)
    asyncio.run(speech.render(text, 8000))
    [run] = runs(engine)
    assert run["text"] == text
    assert run["argv"] == ["ok", run["argv"][1], text]  # type: ignore[index]
    assert "SIPROC_PASSWORD" not in speech._env


def test_text_on_stdin(engine: Path) -> None:
    speech = tts(engine, with_text=False)
    path, _ = asyncio.run(speech.render("four words on stdin", 8000))
    [run] = runs(engine)
    assert run["text"] == "four words on stdin"
    assert soundfile.info(str(path)).frames == pytest.approx(0.4 * 8000, abs=20)


@pytest.mark.parametrize(
    ("mode", "timeout", "reason"),
    [
        ("fail", 20.0, r"^python[0-9.]* failed \(exit status 3\): voice 'xx' not found$"),
        ("nothing", 20.0, r"^the engine wrote no readable audio"),
        ("hang", 0.5, r"^the engine took more than 0\.5 s$"),
        ("flood", 20.0, r"^the engine wrote more than 64 MB$"),
    ],
)
def test_engine_failures_are_one_line_errors(
    engine: Path, mode: str, timeout: float, reason: str
) -> None:
    speech = tts(engine, mode, timeout=timeout)
    with pytest.raises(TtsError, match=reason):
        asyncio.run(speech.render("hi", 8000))
    cache = engine.parent / "cache"
    assert list(cache.iterdir()) == []  # nothing half-made is left, nothing is cached


def test_an_engine_that_cannot_start(tmp_path: Path) -> None:
    settings = TtsSettings(command=("/nonexistent/tts", "{file}"), cache_dir=str(tmp_path))
    with pytest.raises(TtsError, match=r"^cannot run '/nonexistent/tts': No such file"):
        asyncio.run(TextToSpeech(settings).render("hi", 8000))


def test_prune_removes_the_least_recently_used(tmp_path: Path) -> None:
    for age, name in enumerate(["new", "mid", "old"]):
        path = tmp_path / f"{name}.wav"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (1_000_000 - age * 10, 1_000_000 - age * 10))
    (tmp_path / ".engine-x.wav").write_bytes(b"x" * 5000)  # a render under way: not touched
    assert prune(tmp_path, 2500) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".engine-x.wav", "mid.wav", "new.wav"]
    assert prune(tmp_path, 2500) == 0


# --------------------------------------------------------------------------------------------
# configuration


def test_tts_configuration() -> None:
    env = {
        "SIPROC_TTS_COMMAND": "piper --model '/m/en us.onnx' --output_file {file}",
        "SIPROC_TTS_CACHE_DIR": "/var/cache/say",
        "SIPROC_TTS_CACHE_SIZE": "5",
        "SIPROC_TTS_TIMEOUT": "2.5",
    }
    settings = load_config(env).tts
    assert settings.command == ("piper", "--model", "/m/en us.onnx", "--output_file", "{file}")
    assert (settings.cache_dir, settings.cache_size, settings.timeout) == (
        "/var/cache/say",
        5_000_000,
        2.5,
    )
    defaults = load_config({"HOME": "/home/u"}).tts
    assert defaults.command is None
    assert defaults.cache_dir == "/home/u/.cache/siproc/tts"
    xdg = load_config({"HOME": "/home/u", "XDG_CACHE_HOME": "/xdg"}).tts
    assert xdg.cache_dir == "/xdg/siproc/tts"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("espeak-ng -- {text}", "must name the WAV file to write as {file}"),
        ("{file}", "must name the WAV file to write as {file}"),  # the program is no output
        ("tts 'unclosed {file}", "cannot be split into words"),
    ],
)
def test_bad_tts_command(value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="SIPROC_TTS_COMMAND") as info:
        load_config({"SIPROC_TTS_COMMAND": value})
    assert info.value.problem.startswith(problem)


# --------------------------------------------------------------------------------------------
# hostile text and an unusable cache: one-line errors, never an internal error


def test_a_nul_in_the_text_is_a_one_line_error(engine: Path) -> None:
    """``SAY a\\x00b`` unescapes to a NUL, which no argv element can hold."""
    speech = tts(engine)
    with pytest.raises(TtsError, match=r"^the text contains a NUL character$"):
        asyncio.run(speech.render("a\x00b", 8000))
    assert runs(engine) == []


def test_an_unwritable_cache_directory_is_a_one_line_error(engine: Path) -> None:
    """/sys exists and nobody (root included) may create a file in it."""
    command = (sys.executable, str(engine), "ok", "{file}", "{text}")
    speech = TextToSpeech(TtsSettings(command=command, cache_dir="/sys"))
    with pytest.raises(TtsError, match=r"^cannot write to the cache directory '/sys': "):
        asyncio.run(speech.render("hello", 8000))

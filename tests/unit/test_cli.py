"""cli: what siproc-parameters says about the media workers."""

from __future__ import annotations

import json
import os

import pytest

from siproc.cli import parameters_main


def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("SIPROC_")]:
        monkeypatch.delenv(name)


def test_parameters_show_the_media_workers_and_their_priority(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("SIPROC_MEDIA_WORKERS", "3")
    monkeypatch.setenv("SIPROC_MEDIA_PRIORITY", "high")
    assert parameters_main([]) == 0
    assert "Media: 3 worker processes, priority up to high" in capsys.readouterr().out
    assert parameters_main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["media"] == {"workers": 3, "priority": "high"}
    monkeypatch.setenv("SIPROC_MEDIA_WORKERS", "0")
    assert parameters_main([]) == 0
    assert "Media: 0 worker processes (media in the main process)" in capsys.readouterr().out


def test_a_bad_media_setting_is_one_line_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("SIPROC_MEDIA_WORKERS", "lots")
    assert parameters_main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("siproc-parameters: SIPROC_MEDIA_WORKERS:")

"""cli: what siproc-parameters says about the media workers; bad settings and files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from siproc.cli import parameters_main
from tests.tls_certs import make_pki


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


def test_an_unusable_tls_file_is_one_line_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """config.py reads no file; the CLI loads the TLS files right after it, so a bad one still
    stops siproc at start with the variable's name."""
    _clean(monkeypatch)
    monkeypatch.setenv("SIPROC_TLS_CA_FILE", str(tmp_path / "x"))
    assert parameters_main([]) == 1
    err = capsys.readouterr().err
    assert err == f"siproc-parameters: SIPROC_TLS_CA_FILE: {tmp_path / 'x'}: no such file\n"
    pki = make_pki(tmp_path / "pki")
    monkeypatch.setenv("SIPROC_TLS_CA_FILE", str(pki.ca))
    monkeypatch.setenv("SIPROC_TLS_CERT_FILE", str(pki.ca))  # not the key's certificate
    monkeypatch.setenv("SIPROC_TLS_KEY_FILE", str(pki.key))
    assert parameters_main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("siproc-parameters: SIPROC_")
    monkeypatch.setenv("SIPROC_TLS_CERT_FILE", str(pki.cert))
    assert parameters_main([]) == 0

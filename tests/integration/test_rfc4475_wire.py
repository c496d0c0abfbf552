"""Every RFC 4475 torture message, sent over UDP to a running siproc (DESIGN.md 4.4 and 5).

siproc runs inside a network namespace that has only its loopback, so a response sent to a Via
host like 192.0.2.x cannot leave the machine (it fails, and siproc logs so, which the test
checks). The sender (`rfc4475_send.py`) runs in the same namespace: for each message it binds
127.0.0.1 at the port of the top Via's sent-by (where a UDP response must go, RFC 3261 section
18.2.2), sends the message from there and reports what came back, as JSON. The expected outcome
of each file follows its row in `tests/data/rfc4475/MANIFEST.tsv`; handlers exit at once, so an
INVITE that is processed ends in 480 (RFC 3261 section 21.4.18).

Needs root (`ip netns`). It fails, never skips, when it cannot have that.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.netns import loopback_netns
from tests.siproc_proc import Siproc, write_handler

pytestmark = pytest.mark.netns

DATA = Path(__file__).resolve().parents[1] / "data" / "rfc4475"
SENDER = Path(__file__).resolve().parent / "rfc4475_send.py"
SIPROC_PORT = 5090  # not 5060 or any sent-by port of the messages: those are the sender's

# Outcomes are the sequences of statuses answered to the message (by its Call-ID),
# consecutive retransmissions collapsed. () is "dropped".
DROP: frozenset[tuple[int, ...]] = frozenset({()})
BAD = frozenset({(400,)})
BAD_OR_DROP = BAD | DROP
OPTIONS_OK = frozenset({(200,)})
INVITE_TAKEN = frozenset({(100, 480)})  # processed; the handler exits at once: 480
NOT_ALLOWED = frozenset({(405,), (501,)})  # a method we do not do (REGISTER: we are no registrar)

# file -> (class in MANIFEST.tsv, acceptable outcomes; None: anything but a crash).
# A leading 100 Trying before a rejection of an INVITE is always accepted.
EXPECTED: dict[str, tuple[str, frozenset[tuple[int, ...]] | None]] = {
    # To carries a tag: an in-dialog request for a dialog we do not know (RFC 3261 12.2.2)
    "wsinv.dat": ("valid", frozenset({(100, 481), (481,)})),  # 481 stateless: RFC 3261 8.2.7
    "intmeth.dat": ("valid", NOT_ALLOWED),
    "esc01.dat": ("valid", INVITE_TAKEN),
    "escnull.dat": ("valid", NOT_ALLOWED),
    "esc02.dat": ("valid", NOT_ALLOWED),
    "lwsdisp.dat": ("valid", OPTIONS_OK),
    "longreq.dat": ("valid", INVITE_TAKEN),
    "dblreq.dat": ("valid", NOT_ALLOWED),  # and the INVITE after it is ignored (checked below)
    "semiuri.dat": ("valid", OPTIONS_OK),
    "transports.dat": ("valid", OPTIONS_OK),
    "mpart01.dat": ("valid", frozenset({(200,)})),  # MESSAGE outside a call is taken
    "unreason.dat": ("valid", DROP),  # responses to nothing we sent
    "noreason.dat": ("valid", DROP),
    "badinv01.dat": ("invalid", BAD_OR_DROP),
    "clerr.dat": ("invalid", BAD_OR_DROP),
    "ncl.dat": ("invalid", BAD_OR_DROP),
    "scalar02.dat": ("invalid", BAD),
    "scalarlg.dat": ("invalid", DROP),
    "quotbal.dat": ("invalid", BAD),
    "ltgtruri.dat": ("invalid", BAD),
    "lwsruri.dat": ("invalid", BAD),
    "lwsstart.dat": ("invalid", BAD),
    "trws.dat": ("invalid", BAD),
    "escruri.dat": ("tolerable", INVITE_TAKEN | BAD),
    "baddate.dat": ("tolerable", INVITE_TAKEN | BAD),
    "regbadct.dat": ("tolerable", NOT_ALLOWED | BAD),
    "badaspec.dat": ("tolerable", OPTIONS_OK | BAD),
    "baddn.dat": ("tolerable", OPTIONS_OK | BAD),
    "badvers.dat": ("invalid", frozenset({(505,)})),
    "mismatch01.dat": ("invalid", BAD),
    "mismatch02.dat": ("invalid", BAD),
    "bigcode.dat": ("invalid", DROP),
    "badbranch.dat": ("valid", OPTIONS_OK),
    "insuf.dat": ("semantic", BAD),
    "unkscm.dat": ("semantic", frozenset({(416,)})),
    "novelsc.dat": ("semantic", frozenset({(416,)})),
    "unksm2.dat": ("semantic", NOT_ALLOWED),
    "bext01.dat": ("semantic", frozenset({(420,)})),
    "invut.dat": ("semantic", frozenset({(415,)})),
    "regaut01.dat": ("semantic", NOT_ALLOWED),
    "multi01.dat": ("semantic", BAD),
    "mcl01.dat": ("semantic", BAD),
    "bcast.dat": ("semantic", DROP),
    "zeromf.dat": ("semantic", OPTIONS_OK),
    "cparam01.dat": ("semantic", NOT_ALLOWED),
    "cparam02.dat": ("semantic", NOT_ALLOWED),
    "regescrt.dat": ("semantic", NOT_ALLOWED),
    "sdp01.dat": ("semantic", frozenset({(406,)})),
    "inv2543.dat": ("tolerable", INVITE_TAKEN | BAD),
    "test.dat": ("unknown", None),
}

# Headers a response with this status must carry (RFC 3261 sections 21.4.6, 21.4.13, 21.4.15).
REQUIRED_HEADERS = {405: "allow", 415: "accept", 420: "unsupported"}

_FOLD = re.compile(r"\r?\n[ \t]+")


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lowercased name -> value (the first one)
    text: str


def parse_reply(text: str) -> Reply:
    head = _FOLD.sub(" ", text.split("\r\n\r\n", 1)[0]).split("\r\n")
    match = re.match(r"SIP/2\.0 (\d{3}) ", head[0] + " ")
    assert match, f"not a SIP response: {head[0]!r}"
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    return Reply(int(match.group(1)), headers, text)


def read_manifest() -> dict[str, tuple[str, str]]:
    with (DATA / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0][:3] == ["file", "rfc4475_section", "class"], rows[0]
    return {row[0]: (row[2], row[3]) for row in rows[1:] if row}


def method_of(data: bytes) -> str:
    return data.split(b" ", 1)[0].decode("ascii", "replace")


# -- the namespace and the run -------------------------------------------------------------------


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """A fresh network namespace with only `lo`, up; deleted afterwards whatever happened."""
    with loopback_netns("test_rfc4475_wire") as name:
        yield name


@dataclass
class WireRun:
    results: dict[str, dict[str, Any]]  # file -> the sender's report for it
    final_options: dict[str, Any] | None
    siproc: Siproc
    alive_after: bool
    sent_call_ids: set[str]


@pytest.fixture(scope="module")
def wire_run(netns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WireRun]:
    manifest = read_manifest()
    files = sorted(DATA.glob("*.dat"))
    assert len(files) == 50, f"expected the 50 RFC 4475 .dat files in {DATA}, found {len(files)}"
    assert {f.name for f in files} == set(manifest), "MANIFEST.tsv and the .dat files disagree"
    workdir = tmp_path_factory.mktemp("rfc4475")
    handler = write_handler(workdir / "exit.sh", "exit 0\n")
    siproc = Siproc(
        handler,
        cwd=workdir,
        netns=netns,
        env={"SIPROC_TRANSPORT_PORT": str(SIPROC_PORT)},
    )
    try:
        siproc.wait_ready()
        assert siproc.port == SIPROC_PORT
        sender = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                netns,
                sys.executable,
                str(SENDER),
                "--target",
                f"127.0.0.1:{SIPROC_PORT}",
                *map(str, files),
            ],
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        assert sender.returncode == 0, f"sender failed:\n{sender.stderr}"
        output = json.loads(sender.stdout)
        alive = siproc.proc.poll() is None
        sent_ids = {r["call_id"] for r in output["files"] if r["call_id"]}
        yield WireRun(
            {r["file"]: r for r in output["files"]},
            output["final_options"],
            siproc,
            alive,
            sent_ids,
        )
    finally:
        siproc.stop()
        print(f"--- siproc in {netns} ---\n{siproc.stderr()}")


# -- the tests ------------------------------------------------------------------------------------


def test_manifest_and_expectations_agree() -> None:
    manifest = read_manifest()
    assert set(manifest) == set(EXPECTED)
    for name, (cls, _) in EXPECTED.items():
        assert manifest[name][0] == cls, f"{name}: MANIFEST.tsv says {manifest[name][0]}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_message_gets_its_manifest_behaviour(name: str, wire_run: WireRun) -> None:
    result = wire_run.results[name]
    data = (DATA / name).read_bytes()
    cls, allowed = EXPECTED[name]
    row = read_manifest()[name][1]
    assert result["bound"], f"port {result['port']} (the sent-by port) was not free"
    mine = [parse_reply(r["text"]) for r in result["responses"] if r["mine"]]
    statuses: list[int] = []
    for reply in mine:
        if not statuses or statuses[-1] != reply.status:  # a retransmission
            statuses.append(reply.status)
    observed = tuple(statuses)
    transcript = "\n".join(r["text"].split("\r\n", 1)[0] for r in result["responses"])
    context = f"{name} ({cls}: {row}); got {observed or 'nothing'}:\n{transcript}"
    if allowed is not None:
        ok = observed in allowed or (
            method_of(data) == "INVITE"
            and observed[:1] == (100,)
            and observed[1:] in allowed
            and observed[1:] != ()
        )
        assert ok, f"expected one of {sorted(allowed)}: {context}"
    for reply in mine:
        needed = REQUIRED_HEADERS.get(reply.status)
        if needed:
            assert needed in reply.headers, f"{reply.status} without {needed}: {reply.text}"
    if name == "bext01.dat":
        unsupported = mine[0].headers["unsupported"].lower()
        assert "nothingsupportsthis" in unsupported and "nothingsupportsthiseither" in unsupported
    # Whatever else arrived is a retransmission for an earlier message, never an answer to
    # something we did not send (dblreq.dat's trailing INVITE must be ignored).
    for r in result["responses"]:
        other = parse_reply(r["text"]).headers.get("call-id")
        known = other in wire_run.sent_call_ids or (other is None and r["mine"])
        assert known, f"response for Call-ID {other!r}: {r['text']}"


def test_siproc_survives_the_torture(wire_run: WireRun) -> None:
    siproc = wire_run.siproc
    assert wire_run.alive_after, f"siproc died:\n{siproc.stderr()}"
    assert siproc.proc.poll() is None
    final = wire_run.final_options
    assert final is not None, "no answer to a well-formed OPTIONS after the torture messages"
    assert final["text"].startswith("SIP/2.0 200 OK\r\n"), final["text"]
    stderr = "\n".join(siproc.lines)
    assert "Traceback" not in stderr
    assert "internal error" not in stderr
    assert not re.search(r" raised for ", stderr)
    # A response sent to a Via host instead of the packet's source fails in the namespace.
    wrong = [
        line
        for line in siproc.lines
        if "cannot send to" in line and "cannot send to 127.0.0.1:" not in line
    ]
    assert not wrong, "\n".join(wrong)

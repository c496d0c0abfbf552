"""GATHER against real SIPp RFC 4733 digits (issue 10; DESIGN.md 4.5).

SIPp (uac_gather.xml) replays the telephone-events 1 2 3 # from its shipped pcaps, then 1 2 and
silence. The handler runs ``GATHER max=4 timeout=3 finish=#`` on CONNECTED and again on the
first GATHERED: the first ends ``GATHERED 123 finish``, the second ``GATHERED 12 timeout``,
and every key still arrives as a DTMF event before the GATHERED it completes.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.peers import Sipp
from tests.siproc_proc import Siproc, wait_file, write_handler

MakeSipp = Callable[..., Sipp]
SIPP_DIR = Path(__file__).resolve().parent / "sipp"
ENDED = r"^(SIGTERM|EOF)$"

# LOGFILE: logs "EVENT <line>" (with the time since the first GATHER as "@<seconds>" after
# GATHERED lines) for every event, then "EOF" or "SIGTERM".
HANDLER = r"""
log=$1
on_term() {
  while read -r -t 1 line; do echo "EVENT $line" >> "$log"; done
  echo SIGTERM >> "$log"; exit 0
}
trap on_term TERM
echo RINGING; echo ANSWER
gathers=0
while read -r line; do
  case "$line" in
    GATHERED*) echo "EVENT $line" >> "$log"; echo "AT $EPOCHREALTIME" >> "$log" ;;
    *) echo "EVENT $line" >> "$log" ;;
  esac
  case "$line" in
    CONNECTED|GATHERED*)
      gathers=$((gathers + 1))
      if [ $gathers -le 2 ]; then
        echo "AT $EPOCHREALTIME" >> "$log"
        echo "GATHER max=4 timeout=3 finish=#"
      fi ;;
  esac
done
echo EOF >> "$log"
"""


def shifted_pcap(source: Path, target: Path, offset: int) -> None:
    """``source`` (a pcap of RTP over UDP over IPv4 over Ethernet) with the RTP sequence numbers
    and timestamps of its packets moved on by ``offset``: new events, the same key."""
    data = bytearray(source.read_bytes())
    assert struct.unpack_from("<I", data)[0] == 0xA1B2C3D4, "a little-endian pcap"
    pos = 24
    while pos < len(data):
        length = struct.unpack_from("<I", data, pos + 8)[0]
        rtp = pos + 16 + 14 + 20 + 8  # record header, Ethernet, IPv4, UDP
        seq, timestamp = struct.unpack_from(">HI", data, rtp + 2)
        seq, timestamp = (seq + offset) % (1 << 16), (timestamp + offset * 160) % (1 << 32)
        struct.pack_into(">HI", data, rtp + 2, seq, timestamp)
        pos += 16 + length
    target.write_bytes(bytes(data))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "siproc"
    path.mkdir()
    write_handler(path / "h.sh", HANDLER)
    return path


@pytest.fixture
def siproc(workdir: Path) -> Iterator[Siproc]:
    proc = Siproc(workdir / "h.sh", "gather.log", cwd=workdir)
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()
        print(f"--- siproc (port {proc.port}) ---\n{proc.stderr()}")


def test_gather_rfc4733_digits_finish_then_timeout(
    workdir: Path, make_sipp: MakeSipp, siproc: Siproc
) -> None:
    sipp_dir = workdir.parent / "sipp"  # make_sipp's working directory
    sipp_dir.mkdir(exist_ok=True)
    for key in "12":
        source = Path(f"/usr/share/sip-tester/dtmf_2833_{key}.pcap")
        shifted_pcap(source, sipp_dir / f"again_{key}.pcap", 1000)
    uac = make_sipp(
        SIPP_DIR / "uac_gather.xml", f"127.0.0.1:{siproc.port}", timeout=20, extra_args=["-s", "a"]
    )
    result = uac.wait(timeout=30)
    assert result.returncode == 0, result.stdout[-3000:]

    text = wait_file(workdir / "gather.log", ENDED)
    events = [line[6:] for line in text.splitlines() if line.startswith("EVENT ")]
    assert events == [
        "CONNECTED",
        "DTMF 1",
        "DTMF 2",
        "DTMF 3",
        "DTMF #",
        "GATHERED 123 finish",
        "DTMF 1",
        "DTMF 2",
        "GATHERED 12 timeout",
        "DISCONNECTED 200 remote hangup",
    ], events
    # The second GATHER ended 3 s after its last key: SIPp sent 1 at about 0 s and 2 at about
    # 0.4 s of it (0.6 s after the #), so about 3.4 s after it started, not at once.
    times = [float(m) for m in re.findall(r"^AT (\S+)$", text, re.M)]
    assert len(times) == 4  # GATHER, GATHERED, GATHER (at once), GATHERED
    second = times[3] - times[2]
    assert 3.5 <= second <= 4.6, second
    siproc.wait_for(r"GATHERED 12 timeout")

"""A small SIP registrar for tests: `python tests/fake_registrar.py PORT [options]`.

Listens on 127.0.0.1:PORT over UDP and TCP (the same port), answers REGISTER (with a digest
challenge first when --password is given: MD5, qop=auth, verified), OPTIONS 200, anything
else 405. Prints `ready PORT` once it listens, then one line per REGISTER it accepts:
`REGISTERED <transport> <contact> expires=<n>` (after `AUTHORIZED <digest response>` when
it checked one), and `REJECTED <reason>` for a wrong answer.
It runs as its own process so that a test can stop it (SIGTERM: the port closes at once,
TCP connections with it) and start it again on the same port, or run it in a network
namespace with `ip netns exec`. Loopback only (DESIGN.md section 5).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from siproc.sip.auth import Challenge, compute_response
from siproc.sip.framing import StreamFramer
from siproc.sip.headers import make_response
from siproc.sip.message import Request, parse_message, serialize

REALM = "test"


class Registrar:
    def __init__(self, username: str, password: str | None, expires: int | None) -> None:
        self.username = username
        self.password = password
        self.expires = expires  # grant this instead of what is asked
        self.nonces: set[str] = set()

    def answer(self, request: Request, transport: str) -> bytes:
        if request.method == "OPTIONS":
            return serialize(make_response(request, 200, "OK", to_tag="reg"))
        if request.method != "REGISTER":
            return serialize(make_response(request, 405, "Method Not Allowed", to_tag="reg"))
        if self.password is not None:
            problem = self._check(request)
            if problem is not None:
                if problem != "no credentials":
                    print(f"REJECTED {problem}", flush=True)
                nonce = secrets.token_hex(8)
                self.nonces.add(nonce)
                challenge = f'Digest realm="{REALM}", nonce="{nonce}", qop="auth", algorithm=MD5'
                response = make_response(
                    request, 401, "Unauthorized", to_tag="reg",
                    headers=[("WWW-Authenticate", challenge)],
                )  # fmt: skip
                return serialize(response)
        contact = request.headers.get("Contact") or ""
        asked = (request.headers.get("Expires") or "600").strip()
        expires = asked if self.expires is None or asked == "0" else str(self.expires)
        uri = contact.split(">")[0].lstrip("<")
        print(f"REGISTERED {transport} {uri} expires={expires}", flush=True)
        headers = [("Contact", f"<{uri}>;expires={expires}"), ("Expires", expires)]
        return serialize(make_response(request, 200, "OK", to_tag="reg", headers=headers))

    def _check(self, request: Request) -> str | None:
        value = request.headers.get("Authorization")
        if not value:
            return "no credentials"
        params = dict(_params(value.removeprefix("Digest ")))
        nonce = params.get("nonce", "")
        if nonce not in self.nonces:
            return "unknown nonce"
        assert self.password is not None
        expected = compute_response(
            Challenge("Digest", REALM, nonce, "MD5", ("auth",)),
            method="REGISTER",
            uri=params.get("uri", ""),
            username=self.username,
            password=self.password,
            cnonce=params.get("cnonce", ""),
            nc=int(params.get("nc", "0"), 16),
        )
        if params.get("response") != expected:
            return "wrong digest response"
        print(f"AUTHORIZED {expected}", flush=True)  # tests check it is in no log
        return None


def _params(text: str) -> list[tuple[str, str]]:
    out = []
    for part in text.split(","):
        name, _, value = part.strip().partition("=")
        out.append((name.strip(), value.strip().strip('"')))
    return out


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = parse_message(data)
        except ValueError:
            return
        if isinstance(message, Request) and self.transport is not None:
            self.transport.sendto(self.registrar.answer(message, "udp"), addr)


class _Tcp(asyncio.Protocol):
    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for item in self.framer.feed(data, 0.0):
            if isinstance(item, Request) and self.transport is not None:
                self.transport.write(self.registrar.answer(item, "tcp"))


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--username", default="alice")
    parser.add_argument("--password")
    parser.add_argument("--expires", type=int, help="grant this many seconds")
    ns = parser.parse_args()
    registrar = Registrar(ns.username, ns.password, ns.expires)
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: _Udp(registrar), local_addr=("127.0.0.1", ns.port))
    server = await loop.create_server(lambda: _Tcp(registrar), "127.0.0.1", ns.port)
    print(f"ready {ns.port}", flush=True)
    async with server:
        await server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

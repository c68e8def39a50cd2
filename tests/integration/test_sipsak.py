"""A real SIP client (sipsak, Debian package ``sipsak``) against a tiny responder built on our
core, on loopback only: our parser reads what sipsak sends, sipsak accepts what we answer, and
our digest code verifies sipsak's credentials (RFC 2617/7616 MD5)."""

from __future__ import annotations

import socket
import subprocess
import threading

import pytest

from sipwarden.sip import Request, parse_message
from sipwarden.sip.digest import verify_response
from tests.conftest import need_tool

pytestmark = pytest.mark.integration

REALM = "sipwarden.test"
NONCE = "4d1a2b3c5e6f7a8b9c0d1e2f3a4b5c6d"


class Responder:
    """Answers each request on a loopback UDP socket: 401 first, then 200 if the digest checks."""

    def __init__(self, password: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.password = password
        self.requests: list[Request] = []
        self.verified: list[bool] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _reply(self, req: Request, status: str, extra: str = "") -> bytes:
        vias = "".join(f"Via: {v}\r\n" for v in req.headers.get_all("via"))
        to = req.headers.get("to") or ""
        return (
            f"SIP/2.0 {status}\r\n{vias}From: {req.headers.get('from')}\r\n"
            f"To: {to};tag=sw1\r\nCall-ID: {req.call_id}\r\nCSeq: {req.headers.get('cseq')}\r\n"
            f"{extra}Content-Length: 0\r\n\r\n"
        ).encode()

    def _serve(self) -> None:
        for _ in range(4):  # bounded: sipsak sends at most a request and its authorised retry
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                return
            msg = parse_message(data)
            assert isinstance(msg, Request)
            self.requests.append(msg)
            if not msg.authorization:
                challenge = f'WWW-Authenticate: Digest realm="{REALM}", nonce="{NONCE}"\r\n'
                self.sock.sendto(self._reply(msg, "401 Unauthorized", challenge), addr)
                continue
            ok = verify_response(msg.authorization[0], password=self.password, method=msg.method)
            self.verified.append(ok)
            self.sock.sendto(self._reply(msg, "200 OK" if ok else "403 Forbidden"), addr)
            return

    def __enter__(self) -> Responder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(timeout=15)
        self.sock.close()


def _sipsak(sipsak: str, port: int, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sipsak,
            "-s",
            f"sip:alice@127.0.0.1:{port}",
            "-H",
            "127.0.0.1",
            "-a",
            password,
            "-u",
            "alice",
            "--timer-t1",
            "100",
            "-vv",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_sipsak_options_with_digest_auth_is_parsed_and_verified() -> None:
    sipsak = need_tool("sipsak", "sipsak")
    with Responder("correct horse") as server:
        result = _sipsak(sipsak, server.port, "correct horse")
    assert result.returncode == 0, result.stdout + result.stderr
    assert [m.method for m in server.requests] == ["OPTIONS", "OPTIONS"]
    assert all(m.is_valid for m in server.requests), [m.defects for m in server.requests]
    first, retry = server.requests
    assert first.via[0].branch and first.via[0].host == "127.0.0.1"
    assert retry.authorization[0].username == "alice"
    assert retry.authorization[0].realm == REALM
    assert server.verified == [True]


def test_sipsak_wrong_password_fails_our_verification() -> None:
    sipsak = need_tool("sipsak", "sipsak")
    with Responder("correct horse") as server:
        result = _sipsak(sipsak, server.port, "wrong guess")
    assert result.returncode != 0
    assert server.verified == [False]

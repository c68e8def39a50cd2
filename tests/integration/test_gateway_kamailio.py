"""``sipwarden gateway`` between real peers on loopback: Kamailio (Debian package) as the
protected upstream, sipsak as the legitimate client (allow-listed as a monitoring probe, as an
operator would), a SIPVicious-style OPTIONS as the scanner.

Everything binds 127.0.0.x, every wait is bounded, and every process is killed in ``finally``
(:mod:`tests.integration.kamailio`). The scanner sends from 127.0.0.2 so that the ban it earns
does not hit the legitimate client (127.0.0.1); Linux routes the whole of 127.0.0.0/8 to the
loopback interface. The fuller end-to-end tests (SIPVicious itself, calls over UDP/TCP/TLS) are
in ``test_gateway_e2e.py``.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from sipwarden.sip import Response, parse_message
from tests.conftest import need_tool
from tests.integration.kamailio import free_port, running_gateway, running_kamailio

pytestmark = pytest.mark.integration


def options(port: int, branch: str, local: tuple[str, int]) -> bytes:
    """An OPTIONS as SIPVicious svmap writes it (friendly-scanner, From/To 100@1.1.1.1)."""
    host, lport = local
    return (
        f"OPTIONS sip:100@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{lport};branch={branch};rport\r\nMax-Forwards: 70\r\n"
        f'From: "sipvicious"<sip:100@1.1.1.1>;tag={branch[-8:]}\r\n'
        f'To: "sipvicious"<sip:100@1.1.1.1>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\n'
        f"Contact: <sip:100@{host}:{lport}>\r\nUser-Agent: friendly-scanner\r\n"
        "Accept: application/sdp\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def ask(sock: socket.socket, data: bytes, dest: tuple[str, int], wait_s: float) -> bytes | None:
    sock.settimeout(wait_s)
    sock.sendto(data, dest)
    try:
        return sock.recvfrom(65535)[0]
    except TimeoutError:
        return None


def sipsak(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=30, check=False)


def test_gateway_in_front_of_kamailio(tmp_path: Path) -> None:
    kamailio = need_tool("kamailio", "kamailio")
    sipsak_bin = need_tool("sipsak", "sipsak")
    gw_port = free_port()
    # sipsak's From user ("sipsak") is a scanner fingerprint (ET lists the tool): an operator
    # allow-lists their own monitoring probe, as examples/sipwarden.toml shows.
    settings = tmp_path / "sipwarden.toml"
    settings.write_text(
        '[detectors."recon.scanner_fingerprint"]\nallow_sources = ["127.0.0.1/32"]\n'
    )
    with running_kamailio(kamailio, tmp_path) as upstream:
        password = upstream.users["alice"]
        gw_args = ["--config", str(settings), "--listen", f"udp:127.0.0.1:{gw_port}",
                   "--upstream", f"udp:127.0.0.1:{upstream.port}", "--duration", "60"]  # fmt: skip
        with running_gateway(gw_args, tmp_path) as gateway:
            # 1. A digest REGISTER through the gateway succeeds (401, then 200 from Kamailio).
            register = sipsak(
                sipsak_bin, "-U", "-s", f"sip:alice@127.0.0.1:{gw_port}", "-a", password,
                "-H", "127.0.0.1", "-i", "--timer-t1", "100", "-vv",
            )  # fmt: skip
            assert register.returncode == 0, register.stdout + register.stderr

            # 2. OPTIONS through the gateway gets Kamailio's 200.
            ping = sipsak(
                sipsak_bin, "-s", f"sip:alice@127.0.0.1:{gw_port}", "-u", "alice",
                "-H", "127.0.0.1", "--timer-t1", "100", "-vv",
            )  # fmt: skip
            assert ping.returncode == 0, ping.stdout + ping.stderr
            assert "200 OK" in ping.stdout
            # Kamailio's Server header reached the client without its version (sanitize.py).
            server_lines = [ln for ln in ping.stdout.splitlines() if ln.startswith("Server:")]
            assert server_lines and all(
                not any(ch.isdigit() for ch in ln) for ln in server_lines
            ), server_lines

            # 3. A SIPVicious-style OPTIONS gets nothing back, and neither does its retry.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as scanner:
                scanner.bind(("127.0.0.2", 0))
                local = scanner.getsockname()
                answers = [
                    ask(scanner, options(gw_port, f"z9hG4bKsv{i}", local),
                        ("127.0.0.1", gw_port), 1.0)
                    for i in range(2)
                ]  # fmt: skip
            assert answers == [None, None]
            # The same scanner straight at Kamailio is answered: the gateway made the difference.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as direct:
                direct.bind(("127.0.0.2", 0))
                reply = ask(
                    direct, options(upstream.port, "z9hG4bKd1", direct.getsockname()),
                    upstream.address, 2.0,
                )  # fmt: skip
            assert reply is not None and isinstance(parse_message(reply), Response)

            report = gateway.finish()  # SIGTERM: a graceful stop prints the report
    assert report["dropped"] == {"blocklisted": 1, "scanner": 1}, report
    assert report["forwarded_requests"] >= 3  # REGISTER, its authorised retry, OPTIONS
    assert report["forwarded_responses"] == report["forwarded_requests"]
    assert [b["ip"] for b in report["bans"]] == ["127.0.0.2"]
    scanners = [f for f in report["findings"] if f["detector"].startswith("recon.scanner")]
    assert scanners and all(f["source"]["ip"] == "127.0.0.2" for f in scanners), scanners
